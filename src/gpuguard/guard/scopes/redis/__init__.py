"""The Redis scope: one GPU lease shared by processes on many hosts, through one Redis.

Same rules as :class:`~gpuguard.guard.scopes.local.LocalArbiter`; Redis decides, atomically,
in :data:`._lua.LEASE_SCRIPT`. Each process keeps only its own tickets and a mirror of the
shared state for ``current``/``snapshot()``.

* **Liveness.** The grant is a key with a TTL (default 2 s) that the holder's heartbeat
  renews every ``ttl/3``; a holder that dies frees the GPU when the key expires. Waiting
  processes beat too; a dead waiter is skipped when its turn comes.
* **Hand-off is pushed.** Every grant is published; a waiting process learns of its grant
  from that message. Only a dead holder needs a timer: a waiting process wakes when the
  holder's key is due to expire (its TTL as Redis reports it) and lets Redis grant the next.
* **Fencing.** Every grant carries a token larger than any before it (``Lease.fence``).
* **Lost leases.** A holder whose heartbeat finds its grant gone or taken over, whose
  heartbeat fails, or whose connection to Redis drops, is told at once through ``on_lost``:
  the guard stops its work and raises :class:`~gpuguard.LeaseLost`. Waiters of a process
  that lost Redis get :class:`~gpuguard.GuardUnavailable`. The heartbeat's socket timeout
  is below the TTL, so a holder knows it lost the lease before anyone else can be granted.
* **Giving back is synchronous.** ``release`` and ``withdraw`` (and ``acquire_nowait``) make
  one round trip on a second, synchronous connection, bounded by :data:`GIVE_BACK_TIMEOUT_S`:
  when they return, Redis has handed the GPU on, a waiter of this process has been granted
  in the same step (exactly as in-process), and a process that exits right after a release
  leaves nothing held. If Redis cannot be told, the TTL frees the GPU.

Needs the ``redis`` extra (redis-py). The parts: :mod:`._arbiter` (decisions of this process),
:mod:`._link` (connections), :mod:`._listener` (pushed grants), :mod:`._lua` (the transitions,
atomic in Redis), :mod:`._mirror` and :mod:`._view` (what this process knows of the lease).
"""

from ._arbiter import RedisArbiter

__all__ = ["RedisArbiter"]
