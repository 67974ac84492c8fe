"""Reading the lease's state back, and rebuilding it when that is safe.

A state that is empty (new, or its slots removed and made anew) or unreadable (cut, corrupt)
is rebuilt only when no request is alive, which the kernel tells (an entry whose lock can be
taken is dead). While any request lives, nothing is granted: :class:`.StateError` names the live
processes, and once they end the next decision rebuilds it. So no crash point and no damage
wedges the lease, and none lets two processes hold it.
"""

from __future__ import annotations

from collections.abc import Container

from ._lease_dir import LeaseDir
from ._state import State, StateError

__all__ = ["read_or_rebuild", "sweep"]


def read_or_rebuild(lease_dir: LeaseDir, mine: Container[int]) -> tuple[State, str]:
    """The state, and what would be wrong with it, as words for a refusal.

    ``mine`` are this process's request numbers (alive by definition). :class:`StateError`
    if the directory was moved, or the state is damaged while requests live.
    """
    lease_dir.check_in_place()
    try:
        return lease_dir.read(), f"the lease state in {lease_dir.path} was rewritten"
    except StateError as exc:
        problem = f"the lease state in {lease_dir.path} is {exc}"
    return _rebuild(lease_dir, mine, problem), problem


def _rebuild(lease_dir: LeaseDir, mine: Container[int], problem: str) -> State:
    seqs = lease_dir.entry_seqs()
    alive = [seq for seq in seqs if seq in mine or lease_dir.alive(seq)]
    if alive:
        pids = ", ".join(sorted({lease_dir.entry_pid(seq) for seq in alive}))
        raise StateError(
            f"{problem} while requests of pid {pids} are alive; nothing is granted until they end"
        )
    state = State(max(seqs, default=-1) + 1)
    lease_dir.write(state)
    for seq in seqs:
        lease_dir.remove_entry(seq)
    return state


def sweep(lease_dir: LeaseDir, state: State) -> None:
    """Remove entry files no request names (left by a process killed as it removed one)."""
    for seq in lease_dir.entry_seqs():
        if seq not in state.requests:
            lease_dir.remove_entry(seq)
