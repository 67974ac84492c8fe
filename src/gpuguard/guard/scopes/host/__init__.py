"""The host scope: one lease shared by every process on this machine (see :mod:`._arbiter`)."""

from ._arbiter import HostArbiter
from ._files import SYSTEM_LOCK_DIR, default_lock_dir, prepare_lock_dir

__all__ = ["SYSTEM_LOCK_DIR", "HostArbiter", "default_lock_dir", "prepare_lock_dir"]
