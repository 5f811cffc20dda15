"""The archive purge's pure rules: which entries are archives, and which are due."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

from coophost.members.archive import Archived, due, parse_entry

REPO = Path(__file__).resolve().parents[2]
DAY = dt.date(2026, 12, 1)


def test_entry_names_parse_to_owner_and_day() -> None:
    assert parse_entry("ada-books.1b194ba15879.20261201T101500Z") == \
        ("ada-books.1b194ba15879", DAY)
    assert parse_entry("ada-books.1b194ba15879.20261201T101500Z-2") == \
        ("ada-books.1b194ba15879", DAY)
    assert parse_entry("legacy-ada-books.test.20261201T101500Z") == \
        ("legacy-ada-books.test", DAY)
    assert parse_entry("ada-books.1b194ba15879.20261201T101500Z.yml") == \
        ("ada-books.1b194ba15879", DAY)
    for odd in ("ada-books", "ada-books.20261301T101500Z", "../x.20261201T101500Z", ""):
        assert parse_entry(odd) is None, odd


def test_only_entries_past_retention_and_of_no_living_member_are_due() -> None:
    old = Archived("h1", "mail", "/var/mail/archive/a.1.20261101T000000Z", "gone.aaaaaaaaaaaa",
                   dt.date(2026, 11, 1))
    young = Archived("h1", "mail", "/var/mail/archive/y", "gone.bbbbbbbbbbbb",
                     dt.date(2026, 11, 20))
    living = Archived("h2", "mail", "/var/mail/archive/l", "ada.cccccccccccc",
                      dt.date(2026, 1, 1))
    entries = [old, young, living]
    assert due(entries, {"ada.cccccccccccc"}, 30, DAY) == [old]
    assert due(entries, {"ada.cccccccccccc"}, 30, dt.date(2026, 10, 31)) == []
    # The boundary: exactly the retention period later is due.
    assert due([old], set(), 30, dt.date(2026, 12, 1)) == [old]
    assert due([old], set(), 30, dt.date(2026, 11, 30)) == []


def test_mail_homes_moves_legacy_folders_and_archives_lives_gone(tmp_path: Path) -> None:
    """The role's helper, run here on a folder tree (as the current user)."""
    import getpass

    root, legacy, archive = tmp_path / "units", tmp_path / "vhosts", tmp_path / "archive"
    root.mkdir()
    (legacy / "keep.test" / "box").mkdir(parents=True)
    (legacy / "keep.test" / "box" / "msg").write_text("mine")
    (legacy / "orphan.test").mkdir()
    gone = root / "old.aaaaaaaaaaaa" / "keep.test" / "box"
    gone.mkdir(parents=True)
    (gone / "msg").write_text("the previous owner's")
    owners = tmp_path / "owners.json"
    owners.write_text(json.dumps({"owners": {"new.bbbbbbbbbbbb": ["keep.test"]}}))
    helper = REPO / "services" / "mail" / "files" / "mail-homes"
    done = subprocess.run([sys.executable, str(helper), str(owners), str(root), str(legacy),
                           str(archive), getpass.getuser()],
                          capture_output=True, text=True, check=True).stdout
    assert "changed" in done.splitlines()
    assert (root / "new.bbbbbbbbbbbb" / "keep.test" / "box" / "msg").read_text() == "mine"
    assert sorted(p.name for p in root.iterdir()) == ["new.bbbbbbbbbbbb"]
    names = sorted(p.name for p in archive.iterdir())
    assert [parse_entry(n)[0] for n in names] == ["legacy-orphan.test", "old.aaaaaaaaaaaa"]
    assert oct(archive.stat().st_mode & 0o777) == "0o700"
    again = subprocess.run([sys.executable, str(helper), str(owners), str(root), str(legacy),
                            str(archive), getpass.getuser()],
                           capture_output=True, text=True, check=True).stdout
    assert again == "", "a second run changed something"
