"""Atomic file writes: a temp file in the same folder, fsync, rename; the folder fsynced too."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO


def atomic_write(path: Path, data: bytes | str, mode: int = 0o644) -> None:
    """Replace `path` with `data` so that a crash leaves either the old or the new file."""
    payload = data.encode() if isinstance(data, str) else data
    with atomic_stream(path, mode) as handle:
        handle.write(payload)


@contextlib.contextmanager
def atomic_stream(path: Path, mode: int = 0o600) -> Iterator[IO[bytes]]:
    """A binary file to stream into; it replaces `path` only if the block ends without error.

    On any exception the partial temp file is removed and `path` is left as it was.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


ALIVE_FILE = ".alive"  # flock-ed by the process using a private folder, for as long as it lives
UNLOCKED_GRACE = 600.0  # seconds a folder whose lock file is still empty is left alone


@contextlib.contextmanager
def private_folder(prefix: str) -> Iterator[Path]:
    """A fresh temp folder for one run, removed at the end of the block.

    A process killed midway (SIGKILL, power loss) cannot remove its folder, so every new one
    first sweeps away the folders of dead runs with the same prefix: a folder is alive while
    its process holds a lock on the folder's `.alive` file, and the kernel drops that lock
    when the process dies.
    """
    sweep_dead_folders(prefix)
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    fd = os.open(folder / ALIVE_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, f"{os.getpid()}\n".encode())  # written once locked: see `_dead`
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        os.close(fd)


def sweep_dead_folders(prefix: str, parent: Path | None = None) -> list[Path]:
    """Remove the `prefix*` folders in the temp folder whose process is gone; return them."""
    removed = []
    for folder in Path(parent or tempfile.gettempdir()).glob(f"{prefix}*"):
        if not folder.is_symlink() and folder.is_dir() and _dead(folder):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _dead(folder: Path) -> bool:
    """Whether no living process holds `folder`'s lock (see `private_folder`).

    A lock file still empty may be one whose process has not locked it yet: such a folder is
    taken for dead only once it is old. A folder without a lock file is never touched.
    """
    try:
        fd = os.open(folder / ALIVE_FILE, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:  # not made by `private_folder` (or not yet): not ours to judge
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return bool(os.pread(fd, 32, 0)) or _old(folder)
    except BlockingIOError:
        return False  # its process is still running
    finally:
        os.close(fd)


def _old(folder: Path) -> bool:
    with contextlib.suppress(FileNotFoundError):
        return time.time() - folder.stat().st_mtime > UNLOCKED_GRACE
    return False
