"""The parse cache under .coophost/: validated member records keyed by file mtime, size and hash.

Only ever a cache: any doubt (other format, other co-op rules or catalogue, unreadable file)
means a miss, and deleting it only makes the next plan cold. Stored with `marshal` (plain data
only, fast to load, nothing executable).

On disk the file names and their (mtime, size) pairs come first, as a list and a packed array,
so checking that no file changed is one comparison; the files' SHA-256 digests are packed in
one bytes value, and the records are a separately marshalled blob, read only when a record is
needed.

Besides the per-file entries, a cache holds `derived` data computed from all of its entries
together (e.g. the placement of every unit). Any change to the entries (a file added, changed
or gone) drops it, so derived data is only ever reused for exactly the records it came from.
"""

from __future__ import annotations

import contextlib
import hashlib
import marshal
import os
import time
from array import array
from pathlib import Path
from typing import Any

CACHE_FORMAT = 8  # 8: stricter dates, integers and file checks; re-validate every file
# A file modified this close to the cache's own write may have changed within the same mtime
# tick; such entries are verified by content hash (git's "racy clean" rule).
RACY_NS = 2_000_000_000


def stat_array(stats: list[os.stat_result]) -> array[int]:
    """Return the (mtime_ns, size) of every stat result, packed in one array."""
    packed = array("q")
    for stat in stats:
        packed.append(stat.st_mtime_ns)
        packed.append(stat.st_size)
    return packed


class ParseCache:
    """Per-file cached plain data for one co-op, valid under one fingerprint."""

    def __init__(self, path: Path | None, fingerprint: str) -> None:
        self.path = path
        self.fingerprint = fingerprint
        self.names: list[str] = []
        self.stats: array[int] = array("q")  # mtime_ns, size of each of `names`, in order
        self.derived: dict[str, Any] = {}
        self.written_ns = 0
        self.dirty = False
        self.digests = b""  # the SHA-256 digest of each of `names`, 32 bytes each, in order
        self._blob = b""  # the marshalled list of records in `names` order, not yet read
        self._entries: dict[str, list[Any]] | None = None  # name -> [mtime, size, sha, record]
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
        try:
            names, stats = data["names"], array("q", data["stats"])
            if not isinstance(names, list) or len(stats) != 2 * len(names):
                raise ValueError("inconsistent cache")
            blob, derived, written_ns = data["blob"], data["derived"], data["written_ns"]
            digests = data["digests"]
            if (not isinstance(blob, bytes) or not isinstance(derived, dict)
                    or not isinstance(written_ns, int) or not isinstance(digests, bytes)
                    or len(digests) != 32 * len(names)):
                raise ValueError("inconsistent cache")
        except (KeyError, TypeError, ValueError):
            self.dirty = True
            return
        self.names, self.stats, self.digests, self._blob = names, stats, digests, blob
        self.derived, self.written_ns = derived, written_ns

    def unchanged(self, names: list[str], stats: array[int], newest_ns: int) -> bool:
        """Whether exactly these files, with these (mtime, size) pairs, are cached, none racy.

        `newest_ns` is the newest mtime among them: a file modified within the racy window
        of the cache's write may have changed unseen, so the answer is then no.
        """
        return (not self.dirty and newest_ns < self.written_ns - RACY_NS
                and names == self.names and stats == self.stats)

    @property
    def entries(self) -> dict[str, list[Any]]:
        """Every entry, name -> [mtime_ns, size, sha256 digest, record] (reads the records)."""
        if self._entries is None:
            self._entries = {}
            try:
                records = marshal.loads(self._blob) if self._blob else []  # noqa: S302
                if not isinstance(records, list) or len(records) != len(self.names):
                    raise ValueError("inconsistent cache")
                stats, digests = self.stats, self.digests
                for index, (name, record) in enumerate(zip(self.names, records, strict=True)):
                    self._entries[name] = [stats[2 * index], stats[2 * index + 1],
                                           digests[32 * index:32 * index + 32], record]
            except (EOFError, ValueError, TypeError):
                self._entries = {}  # unreadable: every file is a miss
                self.derived = {}
                self.dirty = True
        return self._entries

    def records(self) -> list[Any]:
        """Every cached record, in file-name order."""
        entries = self.entries
        return [entries[name][3] for name in self.names if name in entries]

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
        if entry is None or entry[2] != hashlib.sha256(raw).digest():
            return None
        entry[0], entry[1] = stat.st_mtime_ns, stat.st_size
        self.dirty = True
        return entry[3]

    def store(self, name: str, stat: os.stat_result, raw: bytes, record: Any) -> None:
        """Remember `record` (plain data) for `name`."""
        self.entries[name] = [stat.st_mtime_ns, stat.st_size, hashlib.sha256(raw).digest(),
                              record]
        self.derived.clear()
        self.dirty = True

    def forget_except(self, names: set[str]) -> None:
        """Drop entries of files that are gone."""
        gone = set(self.entries) - names
        for name in gone:
            del self.entries[name]
        if gone:
            self.derived.clear()
            self.dirty = True

    def get_derived(self, name: str, key: str) -> Any:
        """Return derived data `name` if it was stored under `key` (and no entry changed since)."""
        item = self.derived.get(name)
        return item[1] if isinstance(item, list) and len(item) == 2 and item[0] == key else None

    def set_derived(self, name: str, key: str, value: Any) -> None:
        """Remember `value` (plain data, computed from the current entries) under `key`."""
        self.derived[name] = [key, value]
        self.dirty = True

    def save(self) -> None:
        """Write the cache if it changed; failures are ignored (it is only a cache)."""
        if self.path is None or not self.dirty:
            return
        from coophost.fsutil import atomic_write  # tempfile and shutil: only when writing

        if self._entries is not None:  # entries were read or changed: repack them
            self.names = sorted(self._entries)
            rows = [self._entries[name] for name in self.names]
            self.stats = array("q")
            for mtime, size, _sha, _record in rows:
                self.stats.append(mtime)
                self.stats.append(size)
            self.digests = b"".join(digest for _m, _s, digest, _r in rows)
            self._blob = marshal.dumps([record for _m, _s, _d, record in rows])
        payload = {"format": CACHE_FORMAT, "fingerprint": self.fingerprint,
                   "written_ns": time.time_ns(), "names": self.names,
                   "stats": self.stats.tobytes(), "digests": self.digests,
                   "derived": self.derived, "blob": self._blob}
        with contextlib.suppress(OSError, ValueError):
            atomic_write(self.path, marshal.dumps(payload), 0o600)
        self.dirty = False
