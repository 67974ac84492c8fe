"""Who may hold the GPU at once: one :class:`Policy` per rule, apart from the waiting line.

The line (:mod:`gpuguard.guard._queue`) decides *who is next*; a policy decides whether the
next one *may start now*, beside those already holding. An arbiter grants waiters in line
order for as long as its policy admits the head of the line, so a policy can never make a
later waiter overtake an earlier one.

* :data:`EXCLUSIVE` (:mod:`.exclusive`): one GPU operation at a time, the safe default.
* :class:`Budget` (:mod:`.budget`): operations side by side while their memory fits the GPU;
  loads and unloads still one at a time. Every scope: process, host and Redis.
* :func:`choose_policy` (:mod:`.choice`): the one place that maps a policy's name
  (``auto``, ``exclusive``, ``budget``) to a policy for a scope and a GPU.
"""

from ._policy import Policy
from .budget import TRANSITIONS, Budget, GpuMemory
from .choice import AUTO_MIN_TOTAL_BYTES, PolicyChoice, PolicyName, choose_policy
from .exclusive import EXCLUSIVE, Exclusive

__all__ = [
    "AUTO_MIN_TOTAL_BYTES",
    "EXCLUSIVE",
    "TRANSITIONS",
    "Budget",
    "Exclusive",
    "GpuMemory",
    "Policy",
    "PolicyChoice",
    "PolicyName",
    "choose_policy",
]
