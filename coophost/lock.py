"""The co-op lock: one writer at a time (fcntl.flock on <inventory>/.coophost/lock)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from coophost.errors import BusyError
from coophost.registry.model import STATE_DIR

LOCK_FILE = "lock"


@contextlib.contextmanager
def coop_lock(root: Path, *, wait: float = 0.0, purpose: str = "write") -> Iterator[None]:
    """Hold the co-op's lock for the block; BusyError (exit 3) if another process holds it.

    `wait` seconds are spent retrying before giving up (0: fail at once). The lock file names
    the holder (pid and purpose) so the error can say who it is; the kernel frees the lock
    when the holder dies, so a crash never leaves the co-op locked.
    """
    directory = root / STATE_DIR
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
                    raise BusyError(f"another coophost process holds the co-op's lock "
                                    f"({holder or 'unknown holder'})",
                                    hint="wait for it to finish, then retry") from None
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}: {purpose}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
