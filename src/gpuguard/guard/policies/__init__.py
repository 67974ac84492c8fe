"""Who may hold the GPU at once: one :class:`Policy` per rule, apart from the waiting line.

The line (:mod:`gpuguard.guard._queue`) decides *who is next*; a policy decides whether the
next one *may start now*, beside those already holding. An arbiter grants waiters in line
order for as long as its policy admits the head of the line, so a policy can never make a
later waiter overtake an earlier one.

* :data:`EXCLUSIVE` (:mod:`.exclusive`): one GPU operation at a time, the safe default.
"""

from ._policy import Policy
from .exclusive import EXCLUSIVE, Exclusive

__all__ = ["EXCLUSIVE", "Exclusive", "Policy"]
