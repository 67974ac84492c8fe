"""A one-GPU budget guard over a fake driver and a footprint book, for the footprint tests."""

from __future__ import annotations

from gpuguard import FakeClock, GpuGuard
from gpuguard.devices import FakeDevices, FootprintBook
from gpuguard.guard.policies import Budget
from gpuguard.guard.scopes.local import LocalArbiter

GIB = 1024**3


def budget_guard(devices: FakeDevices, book: FootprintBook) -> GpuGuard:
    """A process-scope guard of GPU 0 under the budget (2 GiB headroom) counting ``book``."""
    policy = Budget(lambda: devices.info(0), headroom_bytes=2 * GIB, footprints=book)
    arbiter = LocalArbiter(aging_s=None, policy=policy, clock=FakeClock())
    return GpuGuard(clock=FakeClock(), arbiter=arbiter, wait_timeout=None)
