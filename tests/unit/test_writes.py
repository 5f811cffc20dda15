"""Atomic writes under a simulated crash, the co-op lock, and the state database."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from coophost.fsutil import atomic_write
from coophost.lock import coop_lock
from coophost.state import MIGRATIONS, StateDB, migrate, schema_version


@pytest.mark.parametrize("crash_in", ["fsync", "replace", "write"])
def test_atomic_write_crash_leaves_original_and_no_temp(tmp_path: Path, crash_in: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "member.yml"
    target.write_text("original\n")

    def crash(*args: object, **kwargs: object) -> None:
        raise OSError("simulated crash")

    if crash_in == "write":
        monkeypatch.setattr("coophost.fsutil.os.fdopen", crash)
    else:
        monkeypatch.setattr(f"coophost.fsutil.os.{crash_in}", crash)
    with pytest.raises(OSError, match="simulated crash"):
        atomic_write(target, "new content\n")
    assert target.read_text() == "original\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["member.yml"]


def test_killed_writer_leaves_original(tmp_path: Path) -> None:
    """A process killed between writing its temp file and renaming leaves the old file whole."""
    target = tmp_path / "member.yml"
    target.write_text("original\n")
    script = textwrap.dedent(f"""
        import os, coophost.fsutil as f
        os.replace = lambda *a: os._exit(9)
        f.atomic_write(__import__('pathlib').Path({str(target)!r}), 'new\\n')
    """)
    result = subprocess.run([sys.executable, "-c", script], check=False)
    assert result.returncode == 9
    assert target.read_text() == "original\n"


def _held_elsewhere(root: Path, name: str = "lock") -> bool:
    """Whether another process is refused the lock `name` right now."""
    probe = subprocess.run(
        [sys.executable, "-c", "import sys; from pathlib import Path; "
         "from coophost.lock import coop_lock\n"
         "with coop_lock(Path(sys.argv[1]), name=sys.argv[2]):\n    pass", str(root), name],
        capture_output=True, text=True, check=False)
    return probe.returncode != 0 and "BusyError" in probe.stderr


def test_lock_nests_in_one_process_and_is_freed_at_the_outermost_exit(tmp_path: Path) -> None:
    with coop_lock(tmp_path, purpose="first"):
        with coop_lock(tmp_path, purpose="nested"):
            pass
        assert _held_elsewhere(tmp_path)
    assert not _held_elsewhere(tmp_path)


def test_named_locks_are_independent(tmp_path: Path) -> None:
    with coop_lock(tmp_path, purpose="deploy"):  # a deploy never blocks members' requests
        assert _held_elsewhere(tmp_path)
        assert not _held_elsewhere(tmp_path, "requests.lock")


def test_lock_held_by_another_process_makes_a_write_exit_3(coop: Path, cli) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; "
         "from coophost.lock import coop_lock\n"
         "with coop_lock(Path(sys.argv[1]), purpose='test holder'):\n"
         "    print('held', flush=True); time.sleep(30)", str(coop)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        before = (coop / "members" / "ada-books.yml").read_text()
        code, _, err = cli("-i", str(coop), "member", "suspend", "ada-books")
        assert code == 3
        assert "test holder" in err
        assert (coop / "members" / "ada-books.yml").read_text() == before
    finally:
        holder.kill()
        holder.wait()


def test_state_migrates_and_records(tmp_path: Path) -> None:
    with StateDB(tmp_path) as state:
        assert schema_version(state.conn) == len(MIGRATIONS)
        assert state.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        state.record_host_applied("h1", "H", [("a", "mail", "x"), ("b", "mail", "y")])
        state.record_host_applied("h1", "H2", [("a", "mail", "x2")])
        applied = state.applied()
    assert applied.units == {("h1", "a", "mail"): "x2"}
    assert applied.hosts == {"h1": "H2"}


def test_state_migration_steps_are_applied_once(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    extra = (*MIGRATIONS, "CREATE TABLE extra_step (id INTEGER PRIMARY KEY)")
    assert migrate(conn, extra) == len(extra)
    assert migrate(conn, extra) == len(extra)
    assert conn.execute("SELECT count(*) FROM extra_step").fetchone()[0] == 0


def test_state_newer_than_code_is_refused(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 5}")
    with pytest.raises(Exception, match="newer"):
        migrate(conn)


def test_cache_is_only_a_cache(coop: Path, cli) -> None:
    """A corrupt or deleted parse cache changes nothing but speed."""
    code, first, _ = cli("-i", str(coop), "plan", "--json")
    for path in (coop / ".coophost" / "cache").iterdir():
        path.write_bytes(os.urandom(64))
    code2, second, _ = cli("-i", str(coop), "plan", "--json")
    assert (code, first) == (code2, second)
