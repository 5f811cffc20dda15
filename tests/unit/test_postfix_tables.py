"""services/mail/files/postfix-tables: the one command that writes the eight postfix tables.

Run here on a folder (as the current user). postfix is not installed on the controller, so a
stand-in for `postmap -s texthash:FILE` refuses what postfix's texthash reader warns about (a
line without a value); the role's molecule scenario and the lab's fast-path test run the real
postmap.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

HELPER = Path(__file__).resolve().parents[2] / "services" / "mail" / "files" / "postfix-tables"

# Exits 0 and warns, as postmap does, on a line that is neither a comment nor "key value".
POSTMAP = """\
import sys
path = sys.argv[-1].split(":", 1)[1]
for number, line in enumerate(open(path), 1):
    if line.strip() and not line.startswith("#") and len(line.split()) < 2:
        print(f"postmap: warning: {path}, line {number}: expected format: key whitespace value",
              file=sys.stderr)
"""


def run(tmp_path: Path, bundle: dict[str, str], *flags: str) -> subprocess.CompletedProcess[str]:
    """The helper with `bundle` on its standard input, the tables in tmp_path/tables."""
    postmap = tmp_path / "postmap"
    postmap.write_text(f"#!{sys.executable}\n{POSTMAP}")
    postmap.chmod(0o755)
    folder = tmp_path / "tables"
    folder.mkdir(exist_ok=True)
    return subprocess.run([sys.executable, str(HELPER), "--postmap", str(postmap), *flags, "-",
                           str(folder)], input=json.dumps(bundle), capture_output=True,
                          text=True, check=False)


def test_writes_only_the_tables_that_differ_and_says_which(tmp_path: Path) -> None:
    tables = {"domains": "a.test ada\n", "mailboxes": "ada@a.test a.test/ada/\n",
              "suspended": "# none\n"}
    first = run(tmp_path, tables)
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == ["changed", "replaced domains", "replaced mailboxes",
                                         "replaced suspended"]
    folder = tmp_path / "tables"
    assert {p.name: p.read_text() for p in folder.iterdir()} == tables
    assert oct((folder / "domains").stat().st_mode & 0o777) == "0o644"
    # Old enough that postfix's texthash reader does not wait for it to cool down.
    assert (folder / "domains").stat().st_mtime <= time.time() - 2
    again = run(tmp_path, tables)
    assert (again.returncode, again.stdout) == (0, ""), "a second run changed something"
    before = (folder / "domains").stat().st_ino
    changed = run(tmp_path, {**tables, "mailboxes": "ada@a.test a.test/ada/\nbo@a.test x/\n"})
    assert changed.stdout.splitlines() == ["changed", "replaced mailboxes"]
    assert (folder / "domains").stat().st_ino == before, "an unchanged table was rewritten"


def test_a_bad_table_replaces_nothing(tmp_path: Path) -> None:
    good = {"domains": "a.test ada\n", "mailboxes": "ada@a.test a.test/ada/\n"}
    assert run(tmp_path, good).returncode == 0
    bad = run(tmp_path, {"domains": "a.test ada\nb.test ada\n", "mailboxes": "novalue\n"})
    assert bad.returncode == 1
    assert "table mailboxes refused, nothing replaced" in bad.stderr
    assert "expected format" in bad.stderr
    folder = tmp_path / "tables"
    # Not even the good table of the same bundle: postfix never reads half of a new set.
    assert {p.name: p.read_text() for p in folder.iterdir()} == good


def test_check_mode_reports_and_writes_nothing(tmp_path: Path) -> None:
    assert run(tmp_path, {"domains": "a.test ada\n"}).returncode == 0
    check = run(tmp_path, {"domains": "b.test bo\n", "transport": ""}, "--check")
    assert (check.returncode, check.stdout.splitlines()) == (
        0, ["changed", "would replace domains", "would replace transport"])
    folder = tmp_path / "tables"
    assert [(p.name, p.read_text()) for p in folder.iterdir()] == [("domains", "a.test ada\n")]


def test_refuses_names_that_are_not_table_names(tmp_path: Path) -> None:
    for name in ("../passwd", ".hidden", "Domains", ""):
        proc = run(tmp_path, {name: "x y\n"})
        assert proc.returncode == 1 and "bad entry" in proc.stderr, name
    assert list((tmp_path / "tables").iterdir()) == []
    broken = subprocess.run([sys.executable, str(HELPER), "-", str(tmp_path)], input="[1]",
                            capture_output=True, text=True, check=False)
    assert broken.returncode == 1 and "not a JSON object" in broken.stderr
