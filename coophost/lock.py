"""The co-op lock: one writer at a time (fcntl.flock on <inventory>/.coophost/lock)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from coophost.errors import BusyError
from coophost.layout import LOCK_FILE, STATE_DIR

_HELD: dict[Path, int] = {}  # locks this process holds, with their nesting depth


@contextlib.contextmanager
def coop_lock(root: Path, *, wait: float = 0.0, purpose: str = "write",
              name: str = LOCK_FILE) -> Iterator[None]:
    """Hold the co-op's lock for the block; BusyError (exit 3) if another process holds it.

    `wait` seconds are spent retrying before giving up (0: fail at once). The lock file names
    the holder (pid and purpose) so the error can say who it is; the kernel frees the lock
    when the holder dies, so a crash never leaves the co-op locked. A process already holding
    the lock may take it again (nested writes under one command).
    """
    key = (root / STATE_DIR / name).resolve()
    if key in _HELD:
        _HELD[key] += 1
        try:
            yield
        finally:
            _HELD[key] -= 1
        return
    with _acquire(root, wait, purpose, name):
        _HELD[key] = 1
        try:
            yield
        finally:
            del _HELD[key]


def held(root: Path, name: str = LOCK_FILE) -> bool:
    """Whether this process holds the co-op's lock (taken with `coop_lock`) right now."""
    return (root / STATE_DIR / name).resolve() in _HELD


class LockNotHeld(RuntimeError):
    """A registry write was called without its caller holding the co-op lock (a bug)."""


def require_held(root: Path, what: str) -> None:
    """Refuse to go on unless the caller holds the co-op's lock (LockNotHeld otherwise).

    Writes of co-op files decide nothing and lock nothing: their caller holds the lock around
    reading the co-op, deciding and writing, so the write rests on what it read.
    """
    if not held(root):
        raise LockNotHeld(f"{what} writes {root}: its caller must hold the co-op lock "
                          "(coophost.lock.coop_lock) around read, decide and write")


@contextlib.contextmanager
def _acquire(root: Path, wait: float, purpose: str, name: str) -> Iterator[None]:
    directory = root / STATE_DIR
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / name, os.O_RDWR | os.O_CREAT, 0o600)
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
