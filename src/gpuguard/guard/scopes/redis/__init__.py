"""The Redis scope: one GPU lease shared by processes on many hosts, through one Redis.

Same rules as :class:`~gpuguard.guard.scopes.local.LocalArbiter`; Redis decides, atomically,
in :data:`._lua.LEASE_SCRIPT`. Each process keeps only its own tickets and a mirror of the
shared state for ``current``/``snapshot()``.

* **Liveness.** The grant is a key with a TTL (default 2 s) that the holder's heartbeat
  renews every ``ttl/5`` from a thread of its own (:mod:`._heartbeat`), so no event loop can
  starve it; a holder that dies frees the GPU when the key expires. Waiting processes beat
  too; a dead waiter is skipped when its turn comes.
* **Redis decides; messages are hints.** A grant is pushed to the granted process only, and
  the lease going free to every process; a message only makes a process read the state
  (anyone may publish), but for a grant made alone that the Lua script signed with the
  granted process's secret, which is taken as it stands. Grants and losses follow what the
  script says, never an unsigned message. A hold costs a bounded number of Redis commands
  whatever the length of the line.
* **Self-fencing.** A beat confirms the grant until ``sent + ttl``; ``ttl/4`` before that, if
  no later beat confirmed it (Redis stalled, unreachable), the lease is lost: its work is
  stopped and awaited, and only then does the holder get :class:`~gpuguard.LeaseLost`. A
  lost connection alone loses nothing: the heartbeat asks Redis again, and a grant that still
  stands is kept. A holder re-asserts a grant that a restarted Redis forgot, unless another
  was granted since.
* **Fencing.** Every grant carries a token larger than any before it (``Lease.fence``).
* **Giving back is synchronous.** ``release`` and ``withdraw`` (and ``acquire_nowait``) make
  one round trip on a second, synchronous connection, bounded by ``GIVE_BACK_TIMEOUT_S``:
  when they return, Redis has handed the GPU on, a waiter of this process has been granted
  in the same step (exactly as in-process), and a process that exits right after a release
  leaves nothing held. If Redis cannot be told, the TTL frees the GPU.

The URL may carry an ACL user and password and ``rediss://`` for TLS (docs/security.md).
* **Sharing.** Under a sharing policy (the budget) the grants in Redis are the ledger: the
  heads of the line are granted, atomically, while their bytes fit the room their process
  measured on the GPU; each grant has its own TTL and fence, and one lost leaves the others
  standing (:mod:`._sharing`). A lease name is one GPU.
* **A dead holder's GPU memory.** Redis remembers the holder of a grant that lapsed; a waiter
  of its host granted next starts once the GPU's driver no longer lists it (bounded,
  :mod:`._teardown`), holding the grant meanwhile.

Needs the ``redis`` extra (redis-py). The parts: :mod:`._arbiter` (the arbiter's calls),
:mod:`._core` (this process's tickets, held to Redis's answers), :mod:`._sharing` (what the
policy counts here), :mod:`._teardown` (grants held back for a dead holder's teardown),
:mod:`._link` (connections), :mod:`._listener` (messages), :mod:`._heartbeat` (renewals and
the fence), :mod:`._lua` and :mod:`._lua_grants` (the transitions, atomic in Redis),
:mod:`._mirror` and :mod:`._view` (what this process knows of the lease).
"""

from ._arbiter import RedisArbiter

__all__ = ["RedisArbiter"]
