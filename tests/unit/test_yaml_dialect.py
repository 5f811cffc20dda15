"""One YAML dialect (1.2 core) for reading and writing registry files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from coophost.registry.yamlio import load_text, rt_dump, rt_load

WORDS = ["on", "off", "yes", "no", "y", "n", "On", "NO"]


def test_yaml_11_words_are_strings() -> None:
    data = load_text("mailboxes: [" + ", ".join(WORDS) + "]\nflag: true\n", "f.yml")
    assert data == {"mailboxes": WORDS, "flag": True}


@pytest.mark.parametrize(("text", "value"), [
    ("010", 10), ("0o17", 15), ("0x1f", 31), ("-3", -3), ("1:30", "1:30"), ("1_000", 1000),
    ("0b101", 5), ("0o1_7", 15), ("1.5", 1.5), ("1e3", 1000.0), ("~", None),
])
def test_scalars_read_as_ruamel_reads_them(text: str, value: object) -> None:
    assert load_text(f"x: {text}\n", "f.yml")["x"] == value
    assert load_text(f"x: {text}\n", "f.yml")["x"] == rt_load(f"x: {text}\n")["x"]


def test_written_strings_read_back_as_strings() -> None:
    doc = rt_load("mailboxes: [ada]\n")
    doc["mailboxes"].extend([*WORDS, "1:30", "010", "true", "null"])
    assert load_text(rt_dump(doc), "f.yml")["mailboxes"] == [
        "ada", *WORDS, "1:30", "010", "true", "null"]


def test_mailboxes_named_on_and_off_round_trip_through_the_cli(coop: Path, cli) -> None:
    code, _, err = cli("-i", str(coop), "service", "enable", "ada-books", "mail",
                       "--set", "mailboxes=[ada, orders, on, yes, no, off]")
    assert code == 0, err
    code, out, err = cli("-i", str(coop), "member", "show", "ada-books", "--json")
    assert code == 0, err
    shown = json.loads(out)
    assert shown["services"]["mail"]["mailboxes"] == ["ada", "orders", "on", "yes", "no", "off"]
    code, _, err = cli("-i", str(coop), "member", "edit", "ada-books", "--name", "Ada")
    assert code == 0, err
    code, _, err = cli("-i", str(coop), "plan")
    assert code in (0, 1), err


@pytest.mark.parametrize("why", ["1e3", "0o17", "on", "1:30"])
def test_request_files_read_back_what_was_written(coop: Path, why: str) -> None:
    from coophost.members.requests import deny_request, file_request, get_request, load_requests

    file_request(coop, "ada-books", "mail", {"quota_mb": 300}, "member ada-books")
    deny_request(coop, 1, "alice", why)
    assert get_request(coop, 1).history[-1]["why"] == why
    assert [r.state for r in load_requests(coop)] == ["denied"]
