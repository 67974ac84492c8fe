"""What a sharing policy counts in this process for the Redis lease's ledger.

The lease script cannot read the GPU, so each request carries what its process measured
(:class:`~._mirror.Share`): the bytes the policy counts for it, and the *room*: the GPU's
memory less the headroom and less what the holders' declared bytes do not explain (programs
outside gpuguard, a holder using more than it declared), as this process reads the GPU beside
the holders it knows of. Redis sums the declared bytes of every holder against that room; the
policy's own ``admits``, in the granted process, has the final word
(:meth:`Sharing.refuses`).

A Redis lease name is one GPU: every host that shares it must name the same physical GPU
(containers or processes on one machine), so every room is that GPU's.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..._tickets import Grant, Ticket
from ...policies import TRANSITIONS, Policy
from ._mirror import Share

__all__ = ["Sharing"]


class Sharing:
    """The policy of one Redis arbiter, asked in this process (see the module docstring)."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    def share(self, ticket: Ticket, holders: Sequence[Grant]) -> Share | None:
        """What Redis counts for ``ticket`` beside ``holders``; ``None``: it runs alone.

        ``None`` under a policy that counts no memory (exclusive), for a ticket of unknown
        size, and when the GPU cannot be read.
        """
        need = self.policy.need(ticket)
        memory = None if need is None else self.policy.memory(holders)
        if need is None or memory is None:
            return None
        declared = sum(self.policy.need(grant.ticket) or 0 for grant in holders)
        unexplained = max(0, memory.committed_bytes - declared)
        room = max(0, memory.budget_bytes - unexplained)
        return Share(need, room, ticket.operation in TRANSITIONS)

    def refuses(self, ticket: Ticket, others: Sequence[Grant]) -> bool:
        """True if the policy here does not admit ``ticket``, granted beside ``others``.

        Then the grant goes back to the head of its line, to be granted alone (the rule in
        docs/design.md, "Big GPUs on the Redis lease").
        """
        return bool(others) and not self.policy.admits(others, ticket)
