"""The parse cache under .coophost/: validated member records keyed by file mtime, size and hash.

Only ever a cache: any doubt (other format, other co-op rules or catalogue, unreadable file)
means a miss, and deleting it only makes the next plan cold. Stored with `marshal` (plain data
only, fast to load, nothing executable).
"""

from __future__ import annotations

import contextlib
import hashlib
import marshal
import os
import time
from pathlib import Path
from typing import Any

from coophost.fsutil import atomic_write

CACHE_FORMAT = 4
# A file modified this close to the cache's own write may have changed within the same mtime
# tick; such entries are verified by content hash (git's "racy clean" rule).
RACY_NS = 2_000_000_000


class ParseCache:
    """Per-file cached plain data for one co-op, valid under one fingerprint."""

    def __init__(self, path: Path | None, fingerprint: str) -> None:
        self.path = path
        self.fingerprint = fingerprint
        self.entries: dict[str, list[Any]] = {}
        self.written_ns = 0
        self.dirty = False
        if path is not None:
            self._read(path)

    def _read(self, path: Path) -> None:
        try:
            data = marshal.loads(path.read_bytes())  # noqa: S302 - our own plain-data cache
        except (OSError, EOFError, ValueError, TypeError):
            return
        if (not isinstance(data, dict) or data.get("format") != CACHE_FORMAT
                or data.get("fingerprint") != self.fingerprint):
            self.dirty = True
            return
        self.entries = data["entries"]
        self.written_ns = data["written_ns"]

    def lookup(self, name: str, stat: os.stat_result) -> Any:
        """Return `name`'s cached record if mtime and size match and it is not racy, else None."""
        entry = self.entries.get(name)
        if entry is None:
            return None
        mtime, size, _sha, record = entry
        if mtime != stat.st_mtime_ns or size != stat.st_size:
            return None
        if stat.st_mtime_ns >= self.written_ns - RACY_NS:
            return None
        return record

    def lookup_content(self, name: str, stat: os.stat_result, raw: bytes) -> Any:
        """Return `name`'s cached record if its content hash matches (mtime moved, content not)."""
        entry = self.entries.get(name)
        if entry is None or entry[2] != hashlib.sha256(raw).hexdigest():
            return None
        entry[0], entry[1] = stat.st_mtime_ns, stat.st_size
        self.dirty = True
        return entry[3]

    def store(self, name: str, stat: os.stat_result, raw: bytes, record: Any) -> None:
        """Remember `record` (plain data) for `name`."""
        self.entries[name] = [stat.st_mtime_ns, stat.st_size, hashlib.sha256(raw).hexdigest(),
                              record]
        self.dirty = True

    def forget_except(self, names: set[str]) -> None:
        """Drop entries of files that are gone."""
        gone = set(self.entries) - names
        for name in gone:
            del self.entries[name]
        self.dirty = self.dirty or bool(gone)

    def save(self) -> None:
        """Write the cache if it changed; failures are ignored (it is only a cache)."""
        if self.path is None or not self.dirty:
            return
        payload = {"format": CACHE_FORMAT, "fingerprint": self.fingerprint,
                   "written_ns": time.time_ns(), "entries": self.entries}
        with contextlib.suppress(OSError, ValueError):
            atomic_write(self.path, marshal.dumps(payload), 0o600)
        self.dirty = False
