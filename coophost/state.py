"""The co-op's state in SQLite (WAL) under <inventory>/.coophost/state.db.

The schema carries a version (`PRAGMA user_version`) and grows by appending to MIGRATIONS:
each entry moves the database from version N to N+1 inside one transaction. Never edit a
migration that has shipped; add the next one. Secrets never enter this database.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from coophost.errors import BusyError, ConfigError
from coophost.layout import STATE_DIR, STATE_FILE

MIGRATIONS: tuple[str, ...] = (
    # 1: what was last applied, per unit on a host and per host (the plan's baseline).
    """
    CREATE TABLE applied_unit (
        host       TEXT NOT NULL,
        member     TEXT NOT NULL,
        service    TEXT NOT NULL,
        hash       TEXT NOT NULL,
        run_id     INTEGER,
        applied_at REAL NOT NULL,
        PRIMARY KEY (host, member, service)
    ) WITHOUT ROWID;
    CREATE INDEX applied_unit_member ON applied_unit (member);
    CREATE TABLE applied_host (
        host       TEXT PRIMARY KEY,
        hash       TEXT NOT NULL,
        run_id     INTEGER,
        applied_at REAL NOT NULL
    ) WITHOUT ROWID;
    """,
    # 2: deploy runs, the job of each host in a run, and a compact event summary per job.
    """
    CREATE TABLE run (
        id          INTEGER PRIMARY KEY,
        started_at  REAL NOT NULL,
        finished_at REAL,
        status      TEXT NOT NULL,
        mode        TEXT NOT NULL,
        options     TEXT NOT NULL,
        user        TEXT NOT NULL
    );
    CREATE TABLE host_job (
        run_id      INTEGER NOT NULL REFERENCES run (id),
        host        TEXT NOT NULL,
        status      TEXT NOT NULL,
        started_at  REAL,
        finished_at REAL,
        ok          INTEGER NOT NULL DEFAULT 0,
        changed     INTEGER NOT NULL DEFAULT 0,
        failed      INTEGER NOT NULL DEFAULT 0,
        unreachable INTEGER NOT NULL DEFAULT 0,
        tasks       INTEGER NOT NULL DEFAULT 0,
        units       TEXT NOT NULL,
        summary     TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (run_id, host)
    ) WITHOUT ROWID;
    """,
    # 3: backup drills (each unit's latest archive restored and compared with its manifest),
    # and every archive the controller has seen (one that vanishes was not pruned by it).
    """
    CREATE TABLE backup_drill (
        id         INTEGER PRIMARY KEY,
        owner      TEXT NOT NULL,
        service    TEXT NOT NULL,
        host       TEXT NOT NULL,
        archive    TEXT NOT NULL,
        drilled_at REAL NOT NULL,
        ok         INTEGER NOT NULL,
        detail     TEXT NOT NULL
    );
    CREATE INDEX backup_drill_unit ON backup_drill (owner, service);
    CREATE TABLE backup_archive (
        repo       TEXT NOT NULL,
        archive    TEXT NOT NULL,
        archive_id TEXT NOT NULL,
        owner      TEXT NOT NULL,
        service    TEXT NOT NULL,
        seen_at    REAL NOT NULL,
        pruned_at  REAL,
        PRIMARY KEY (repo, archive_id)
    ) WITHOUT ROWID;
    """,
    # 4: the fingerprint each unit was applied with (coophost.desired.settings, no secrets):
    # the plan's `old -> new` for each setting. NULL for units applied before this version.
    """
    ALTER TABLE applied_unit ADD COLUMN settings TEXT;
    """,
    # 5: health: the last result of each check (`coophost status`, read by the member shell),
    # and the state of each check and request the co-op's contacts or a member were last
    # mailed about (`coophost notify` mails a change of state once).
    """
    CREATE TABLE health_check (
        key        TEXT PRIMARY KEY,
        host       TEXT NOT NULL,
        kind       TEXT NOT NULL,
        ok         INTEGER NOT NULL,
        detail     TEXT NOT NULL,
        members    TEXT NOT NULL,
        checked_at REAL NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE health_notice (
        key        TEXT PRIMARY KEY,
        state      TEXT NOT NULL,
        mailed_at  REAL NOT NULL
    ) WITHOUT ROWID;
    """,
    # 6: the tasks that changed or failed in each host job (coophost.deploy.tasks): role, task
    # name, loop item, and a failure's message; of a no_log task only its role and name. At
    # most a few hundred per job, the rest counted in host_job.tasks_omitted. Never a diff.
    """
    CREATE TABLE job_task (
        run_id  INTEGER NOT NULL,
        host    TEXT NOT NULL,
        seq     INTEGER NOT NULL,
        role    TEXT NOT NULL,
        task    TEXT NOT NULL,
        item    TEXT NOT NULL,
        status  TEXT NOT NULL,
        message TEXT NOT NULL,
        PRIMARY KEY (run_id, host, seq),
        FOREIGN KEY (run_id, host) REFERENCES host_job (run_id, host)
    ) WITHOUT ROWID;
    ALTER TABLE host_job ADD COLUMN tasks_omitted INTEGER NOT NULL DEFAULT 0;
    """,
    # 7: the deploy's fast path. Each host's host-level hash as last applied (its host hash
    # without its units' own settings, coophost.desired.render.host_level_hash): NULL for
    # hosts applied before this version, which are then not eligible until a full play.
    # And the path each host job took: full (the site playbook) or fast (units.yml).
    """
    ALTER TABLE applied_host ADD COLUMN level TEXT;
    ALTER TABLE host_job ADD COLUMN path TEXT NOT NULL DEFAULT 'full';
    """,
)


class StateDamaged(ConfigError):
    """state.db cannot be read as a database (garbage, truncated, not SQLite) (exit 2)."""

    maintenance = True  # the member shell says "under maintenance", never the database error

    def __init__(self, path: Path, problem: object) -> None:
        super().__init__(
            f"{path}: the co-op's state database is damaged ({problem})",
            hint=f"restore it from a backup, or move it aside with its -wal and -shm files "
                 f"(mv {path} {path}.damaged): coophost then starts a new one, the next plan "
                 "shows every unit as to be added, and `coophost deploy` applies and records "
                 "them again (the deploy history stays in the damaged file)")
        self.file = str(path)


def _converted(path: Path, exc: sqlite3.Error) -> Exception:
    """The coophost error for a SQLite error on state.db: busy (exit 3) or damaged (exit 2)."""
    text = str(exc)
    if isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text):
        return BusyError(f"{path}: the state database is busy ({text})",
                         hint="another coophost process is writing it; retry")
    return StateDamaged(path, text)


@dataclass
class Applied:
    """What state.db records as last applied."""

    units: dict[tuple[str, str, str], str] = field(default_factory=dict)  # (host, m, s) -> hash
    hosts: dict[str, str] = field(default_factory=dict)
    # Each host's host-level hash as last applied (None: applied before it was recorded).
    levels: dict[str, str | None] = field(default_factory=dict)


class StateDB:
    """A connection to one co-op's state database, migrated to the current schema."""

    def __init__(self, root: Path) -> None:
        directory = root / STATE_DIR
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / STATE_FILE
        self.conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
        try:
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.execute("PRAGMA foreign_keys=ON")
            migrate(self.conn)
        except sqlite3.Error as exc:
            self.conn.close()
            raise _converted(self.path, exc) from None

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()

    def __enter__(self) -> StateDB:
        return self

    def __exit__(self, kind: object, error: BaseException | None, _tb: object) -> None:
        """Close; a SQLite error inside the block becomes StateDamaged (or BusyError)."""
        self.close()
        if isinstance(error, sqlite3.Error):
            raise _converted(self.path, error) from None

    def applied(self) -> Applied:
        """Every applied unit and host hash."""
        result = Applied()
        for host, member, service, digest in self.conn.execute(
                "SELECT host, member, service, hash FROM applied_unit"):
            result.units[(host, member, service)] = digest
        for host, digest, level in self.conn.execute(
                "SELECT host, hash, level FROM applied_host"):
            result.hosts[host] = digest
            result.levels[host] = level
        return result

    def applied_settings(self) -> dict[tuple[str, str, str], str | None]:
        """The stored fingerprint of every applied unit, by (host, member, service)."""
        return {(host, member, service): settings for host, member, service, settings in
                self.conn.execute("SELECT host, member, service, settings FROM applied_unit")}

    def record_host_applied(self, host: str, host_hash: str,
                            units: Iterable[tuple[str, str, str]],
                            run_id: int | None = None,
                            settings: Mapping[tuple[str, str], str] | None = None,
                            level: str | None = None) -> None:
        """Record that `host` now runs exactly `units` ((member, service, hash)), atomically.

        Call only after the host's apply succeeded: its previous rows are replaced, so units
        removed from the host disappear from the record in the same transaction. `settings`:
        each unit's fingerprint, by (member, service); `level`: the host-level hash (None: not
        known, which makes the host's next deploy a full play).
        """
        with self.transaction() as conn:
            write_applied(conn, host, host_hash, units, run_id, settings, level)

    def forget_host(self, host: str) -> None:
        """Drop every record of `host` (it was removed and is gone)."""
        with self.transaction():
            self.conn.execute("DELETE FROM applied_unit WHERE host = ?", (host,))
            self.conn.execute("DELETE FROM applied_host WHERE host = ?", (host,))

    def transaction(self) -> _Transaction:
        """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error)."""
        return _Transaction(self.conn)


def write_applied(conn: sqlite3.Connection, host: str, host_hash: str,
                  units: Iterable[tuple[str, str, str]], run_id: int | None,
                  settings: Mapping[tuple[str, str], str] | None = None,
                  level: str | None = None) -> None:
    """Replace what `host` is recorded to run (call inside a transaction)."""
    now = time.time()
    known = settings or {}
    conn.execute("DELETE FROM applied_unit WHERE host = ?", (host,))
    conn.executemany(
        "INSERT INTO applied_unit (host, member, service, hash, run_id, applied_at, settings) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        [(host, m, s, h, run_id, now, known.get((m, s))) for m, s, h in units])
    conn.execute(
        "INSERT INTO applied_host (host, hash, run_id, applied_at, level) "
        "VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (host) DO UPDATE SET hash = excluded.hash, "
        "run_id = excluded.run_id, applied_at = excluded.applied_at, level = excluded.level",
        (host, host_hash, run_id, now, level))


class _Transaction:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self.conn.execute("ROLLBACK" if exc_type else "COMMIT")


def schema_version(conn: sqlite3.Connection) -> int:
    """Return the schema version the database is at."""
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection, migrations: tuple[str, ...] = MIGRATIONS) -> int:
    """Bring the database to the newest schema, one transaction per step; returns the version."""
    version = schema_version(conn)
    if version > len(migrations):
        raise ConfigError(f"state.db has schema version {version}, newer than this coophost "
                          f"knows ({len(migrations)})", hint="upgrade coophost")
    for number in range(version, len(migrations)):
        conn.execute("BEGIN IMMEDIATE")
        try:
            if schema_version(conn) == number:  # another process may have migrated meanwhile
                for statement in migrations[number].split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {number + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return len(migrations)

