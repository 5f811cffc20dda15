"""Atomic file writes: a temp file in the same folder, fsync, rename; the folder fsynced too.

Also the one careful reader of co-op files (`read_regular`): a symlink, FIFO, device, folder,
unreadable or oversized file is refused by name without being read, so no file can make
coophost hang, read without bound, or follow a link out of the co-op directory.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from coophost.errors import ConfigError, ConflictError

_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe (FIFO)"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"))


class FileRefused(ConfigError):
    """A co-op file that is not a readable regular file of bounded size (exit 2)."""

    def __init__(self, label: str, problem: str) -> None:
        super().__init__(f"{label}: refused, {problem}",
                         hint="registry files must be regular files (not links, pipes, devices "
                              "or folders), readable, and within the size limit")
        self.file = label


def read_regular(path: Path, label: str, limit: int) -> bytes:
    """The bytes of `path`, a regular file of at most `limit` bytes; FileRefused otherwise.

    Opened without following a symlink and without blocking (a FIFO never hangs), checked
    with fstat before any read, and read to at most `limit` + 1 bytes. FileNotFoundError
    passes through for the caller to word.
    """
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise FileRefused(label, "it is a symbolic link") from None
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise FileRefused(label, "it cannot be read (permission denied)") from None
        if exc.errno == errno.ENXIO:
            raise FileRefused(label, "it is not a regular file") from None
        raise FileRefused(label, f"it cannot be opened ({exc.strerror})") from None
    try:
        info = os.fstat(fd)
        for test, kind in _KINDS:
            if test(info.st_mode):
                raise FileRefused(label, f"it is {kind}")
        if not stat.S_ISREG(info.st_mode):
            raise FileRefused(label, "it is not a regular file")
        if info.st_size > limit:
            raise FileRefused(label, f"it has {info.st_size} bytes (at most {limit})")
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            try:
                chunk = os.read(fd, limit + 1 - size)
            except OSError as exc:
                raise FileRefused(label, f"it cannot be read ({exc.strerror})") from None
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise FileRefused(label, f"it grew past {limit} bytes while being read")
        return b"".join(chunks)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes | str, mode: int = 0o644) -> None:
    """Replace `path` with `data` so that a crash leaves either the old or the new file."""
    payload = data.encode() if isinstance(data, str) else data
    with atomic_stream(path, mode) as handle:
        handle.write(payload)


def replace_if_unchanged(path: Path, data: bytes | str, expect: bytes | None, label: str,
                         *, limit: int, hint: str, mode: int = 0o644) -> None:
    """Atomically replace `path` with `data` only if it still holds `expect` (None: absent).

    The file is compared again just before the rename, after the new content is written and
    synced: a change made since the caller read it (by another command, an editor, a git
    checkout) is never overwritten; ConflictError (exit 3) names the file and `hint` says
    where the caller's change went.
    """
    conflict = ConflictError(f"{label} changed while coophost was working on it (another "
                             "command, an editor or a checkout wrote it); nothing was written",
                             hint=hint)

    def unchanged() -> None:
        try:
            now: bytes | None = read_regular(path, label, limit)
        except FileNotFoundError:
            now = None
        except FileRefused:
            raise conflict from None
        if now != expect:
            raise conflict

    payload = data.encode() if isinstance(data, str) else data
    with atomic_stream(path, mode, before_rename=unchanged) as handle:
        handle.write(payload)


@contextlib.contextmanager
def atomic_stream(path: Path, mode: int = 0o600,
                  before_rename: Callable[[], None] | None = None) -> Iterator[IO[bytes]]:
    """A binary file to stream into; it replaces `path` only if the block ends without error.

    `before_rename` runs after the data is synced and just before the rename; an exception
    from it aborts the write. On any exception the partial temp file is removed and `path`
    is left as it was.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        if before_rename is not None:
            before_rename()
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
