"""SHA256SUMS lines are what GNU sha256sum writes, so `sha256sum -c` checks odd names too."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from coophost.members.export import sums_line

NAMES = [b"plain.txt", b"with space", b"back\\slash", b"new\nline", b"carriage\rreturn",
         b"\\leading", b"both\\and\nnewline", "caf\u00e9".encode(), b"not-utf8-\xff"]

pytestmark = pytest.mark.skipif(shutil.which("sha256sum") is None, reason="needs sha256sum")


def test_lines_match_gnu_sha256sum_and_check(tmp_path: Path) -> None:
    lines = []
    for index, raw in enumerate(NAMES):
        data = f"file {index}".encode()
        with open(os.path.join(os.fsencode(tmp_path), raw), "wb") as handle:
            handle.write(data)
        name = raw.decode("utf-8", "surrogateescape")
        line = sums_line(hashlib.sha256(data).hexdigest(), name)
        gnu = subprocess.run(["sha256sum", "--", raw], cwd=tmp_path, capture_output=True,
                             check=True).stdout
        assert line == gnu, raw
        lines.append(line)
    (tmp_path / "SHA256SUMS").write_bytes(b"".join(lines))
    checked = subprocess.run(["sha256sum", "--strict", "-c", "SHA256SUMS"], cwd=tmp_path,
                             capture_output=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.count(b": OK\n") == len(NAMES)


def test_a_changed_file_with_an_odd_name_fails_the_check(tmp_path: Path) -> None:
    raw = b"new\nline"
    (tmp_path / raw.decode()).write_bytes(b"original")
    line = sums_line(hashlib.sha256(b"original").hexdigest(), raw.decode())
    (tmp_path / "SHA256SUMS").write_bytes(line)
    (tmp_path / raw.decode()).write_bytes(b"tampered")
    checked = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=tmp_path,
                             capture_output=True)
    assert checked.returncode == 1
    assert b"FAILED" in checked.stdout
