"""services/mail's postfix_tables module, run as Ansible runs it (a JSON args file) on a temp dir.

postmap exists only where postfix is installed: the module's `postmap` option points at a small
stand-in that refuses a table holding a line "BAD" (as postmap refuses a bad line), and a test
with the real postmap runs when the controller has it.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / "services" / "mail" / "library" / "postfix_tables.py"
USER = pwd.getpwuid(os.getuid()).pw_name
GROUP = grp.getgrgid(os.getgid()).gr_name
FAKE_POSTMAP = """#!/bin/sh
# stand-in for postmap -s texthash:FILE: refuses a file holding a line BAD, logs each call
echo "$2" >> "$(dirname "$0")/calls"
file=${2#texthash:}
if grep -qx BAD "$file"; then echo "postmap: fatal: $file, line 1: bad line" >&2; exit 1; fi
"""


def run(tables: dict[str, str], folder: Path, postmap: Path, *, check: bool = False,
        diff: bool = True, **more: object) -> dict[str, Any]:
    args = {"dir": str(folder), "tables": tables, "owner": USER, "group": GROUP,
            "postmap": str(postmap), "_ansible_check_mode": check, "_ansible_diff": diff,
            **more}
    path = folder.parent / "args.json"
    path.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    proc = subprocess.run([sys.executable, str(MODULE), str(path)], capture_output=True,
                          text=True, timeout=60, check=False)
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    tables = tmp_path / "tables"
    tables.mkdir()
    return tables


@pytest.fixture
def postmap(tmp_path: Path) -> Path:
    tool = tmp_path / "bin" / "postmap"
    tool.parent.mkdir()
    tool.write_text(FAKE_POSTMAP)
    tool.chmod(0o755)
    return tool


def calls(postmap: Path) -> list[str]:
    log = postmap.parent / "calls"
    return log.read_text().splitlines() if log.exists() else []


def test_writes_only_differing_tables_checked_cooled_with_a_diff_each(
        folder: Path, postmap: Path) -> None:
    (folder / "domains").write_text("a.test\n")
    (folder / "domains").chmod(0o644)
    (folder / "other").write_text("left alone\n")
    result = run({"domains": "a.test\n", "aliases": "x@a.test y@a.test\n",
                  "transport": "b.test relay:[h2]\n"}, folder, postmap)
    assert result["changed"] is True and "failed" not in result, result
    assert result["changed_items"] == ["aliases", "transport"]
    assert [(d["before"], d["after"], d["before_header"]) for d in result["diff"]] == [
        ("", "x@a.test y@a.test\n", f"{folder}/aliases"),
        ("", "b.test relay:[h2]\n", f"{folder}/transport")]
    assert (folder / "aliases").read_text() == "x@a.test y@a.test\n"
    assert (folder / "other").read_text() == "left alone\n"
    for name in ("aliases", "transport"):
        info = (folder / name).stat()
        assert oct(info.st_mode & 0o7777) == "0o644" and info.st_uid == os.getuid()
        assert time.time() - info.st_mtime >= 2.5, "not dated back: postfix would wait"
    # each staged file was checked before it was moved in, none is left behind
    assert len(calls(postmap)) == 2 and all(".tmp-" in c for c in calls(postmap))
    assert sorted(p.name for p in folder.iterdir()) == ["aliases", "domains", "other",
                                                        "transport"]
    # the same again: nothing to do, postmap not run
    again = run({"domains": "a.test\n", "aliases": "x@a.test y@a.test\n",
                 "transport": "b.test relay:[h2]\n"}, folder, postmap)
    assert again["changed"] is False and again["changed_items"] == [] and "diff" not in again
    assert len(calls(postmap)) == 2


def test_a_changed_mode_rewrites_the_table(folder: Path, postmap: Path) -> None:
    (folder / "domains").write_text("a.test\n")
    (folder / "domains").chmod(0o600)
    result = run({"domains": "a.test\n"}, folder, postmap)
    assert result["changed_items"] == ["domains"]
    assert oct((folder / "domains").stat().st_mode & 0o7777) == "0o644"


def test_a_refused_table_fails_naming_it_and_postmaps_message_and_moves_nothing_in(
        folder: Path, postmap: Path) -> None:
    (folder / "aliases").write_text("old@a.test x@a.test\n")
    result = run({"aliases": "BAD\n", "domains": "b.test\n", "senders": "BAD\n"}, folder,
                 postmap)
    assert result["failed"] is True and result["changed"] is False, result
    assert result["failed_items"] == ["aliases", "senders"]
    assert "aliases, senders failed to validate" in result["msg"]
    assert "bad line" in result["msg"] and "nothing replaced" in result["msg"]
    # the good table (domains) was not moved in either, and nothing staged is left
    assert sorted(p.name for p in folder.iterdir()) == ["aliases"]
    assert (folder / "aliases").read_text() == "old@a.test x@a.test\n"


def test_check_mode_reports_the_diffs_and_writes_nothing(folder: Path, postmap: Path) -> None:
    (folder / "aliases").write_text("old@a.test x@a.test\n")
    result = run({"aliases": "new@a.test x@a.test\n", "domains": "a.test\n"}, folder, postmap,
                 check=True)
    assert result["changed"] is True and result["changed_items"] == ["aliases", "domains"]
    assert result["diff"][0]["before"] == "old@a.test x@a.test\n"
    assert result["diff"][0]["after"] == "new@a.test x@a.test\n"
    assert sorted(p.name for p in folder.iterdir()) == ["aliases"]
    assert (folder / "aliases").read_text() == "old@a.test x@a.test\n"
    assert calls(postmap) == []
    # without diff mode: the names, no diff
    plain = run({"domains": "a.test\n"}, folder, postmap, check=True, diff=False)
    assert plain["changed_items"] == ["domains"] and "diff" not in plain


@pytest.mark.parametrize(("tables", "more", "said"), [
    ({"../passwd": "x\n"}, {}, "bad table name '../passwd'"),
    ({"Aliases": "x\n"}, {}, "bad table name 'Aliases'"),
    ({"aliases": "x\n"}, {"mode": "rw-r--r--"}, "not an octal mode"),
    ({"aliases": "x\n"}, {"owner": "no-such-user-here"}, "no such user or group"),
])
def test_bad_arguments_fail_clearly_and_write_nothing(
        folder: Path, postmap: Path, tables: dict[str, str], more: dict[str, object],
        said: str) -> None:
    result = run(tables, folder, postmap, **more)
    assert result["failed"] is True and said in result["msg"], result
    assert list(folder.iterdir()) == [] and calls(postmap) == []


def test_a_missing_folder_fails(tmp_path: Path, postmap: Path) -> None:
    result = run({"aliases": "x\n"}, tmp_path / "none", postmap)
    assert result["failed"] is True and "is not a folder" in result["msg"]


REAL_POSTMAP = shutil.which("postmap") or (
    "/usr/sbin/postmap" if Path("/usr/sbin/postmap").exists() else None)


@pytest.mark.skipif(REAL_POSTMAP is None,
                    reason="postfix is not installed on this controller (no postmap): the real "
                           "check runs in the mail molecule scenario and the lab tests")
def test_the_real_postmap_refuses_a_line_without_a_value(folder: Path) -> None:
    assert REAL_POSTMAP is not None
    result = run({"aliases": "lonely@a.test\n"}, folder, Path(REAL_POSTMAP))
    assert result["failed"] is True and result["failed_items"] == ["aliases"], result
    good = run({"aliases": "x@a.test y@a.test\n"}, folder, Path(REAL_POSTMAP))
    assert good["changed_items"] == ["aliases"] and "failed" not in good, good
