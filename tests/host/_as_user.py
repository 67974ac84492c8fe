"""Run a fault worker mode as another Unix user (``python -m``, started as root).

``USER MODE ARGS...``: import everything first (the interpreter's own files may not be
readable by USER), then drop to USER with its groups, then run ``_fault_worker`` MODE ARGS.
"""

from __future__ import annotations

import concurrent.futures.thread  # noqa: F401  (asyncio.to_thread, imported lazily)
import os
import pwd
import sys

import gpuguard.guard.scopes.host  # noqa: F401  (imported lazily by GpuGuard.host)
from tests.host import _fault_worker


def main(argv: list[str]) -> None:
    user = pwd.getpwnam(argv[0])
    os.setgroups(os.getgrouplist(user.pw_name, user.pw_gid))
    os.setgid(user.pw_gid)
    os.setuid(user.pw_uid)
    _fault_worker.main(argv[1:])


if __name__ == "__main__":
    main(sys.argv[1:])
