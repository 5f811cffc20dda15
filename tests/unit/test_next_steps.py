"""A CLI that guides: each command that changes the co-op ends saying what comes next.

One `next:` line on stderr (stdout keeps what the command prints: a table, a zone file, JSON),
in one wording; none with --json. A host or a service looked up by name gets one error with
a did-you-mean, as a member does; times read alike everywhere.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from coophost.fmt import when


def _next_lines(err: str) -> list[str]:
    return [line.strip() for line in err.splitlines() if line.strip().startswith("next:")]


def test_member_add_says_to_enable_a_service_next(coop: Path, cli) -> None:
    code, out, err = cli("-i", str(coop), "member", "add", "zed", "--name", "Zed",
                         "--contact", "zed@zed.test", "--domain", "zed.test")
    assert code == 0, err
    assert "added member zed" in out and "next:" not in out
    assert _next_lines(err) == ["next: coophost service enable zed SERVICE"]


@pytest.mark.parametrize("args", [
    ["service", "enable", "dune-press", "git"],
    ["service", "disable", "ada-books", "mail"],
    ["member", "suspend", "ada-books", "--why", "unpaid"],
    ["member", "edit", "ada-books", "--add-domain", "ada-books2.test"],
    ["member", "move", "ada-books", "mail", "h1", "--record-only"],
])
def test_a_registry_change_says_deploy_next(coop: Path, cli, args: list[str]) -> None:
    code, out, err = cli("-i", str(coop), *args)
    assert code == 0, out + err
    assert _next_lines(err) == ["next: coophost deploy"]
    assert "next:" not in out


def test_a_request_filed_then_approved_then_denied_each_say_what_next(coop: Path, cli) -> None:
    for slug in ("zed", "yan"):
        code, _, err = cli("-i", str(coop), "member", "add", slug, "--name", slug,
                           "--contact", f"{slug}@{slug}.test", "--domain", f"{slug}.test")
        assert code == 0, err
    code, _, err = cli("-i", str(coop), "requests", "file", "zed", "mail",
                       "--set", "mailboxes=[info]")
    assert code == 0, err
    assert _next_lines(err) == ["next: coophost requests approve 1"]
    code, _, err = cli("-i", str(coop), "requests", "approve", "1")
    assert code == 0, err
    assert _next_lines(err) == ["next: coophost deploy"]
    code, _, err = cli("-i", str(coop), "requests", "file", "yan", "mail",
                       "--set", "mailboxes=[info]")
    assert code == 0, err
    code, _, err = cli("-i", str(coop), "requests", "deny", "2", "--why", "not now")
    assert code == 0, err
    assert _next_lines(err) == ["next: coophost requests list"]


def test_host_add_says_to_check_the_host_next(coop: Path, cli) -> None:
    code, _, err = cli("-i", str(coop), "host", "add", "h4", "--address", "192.0.2.4",
                       "--ram-mb", "1024", "--disk-gb", "10", "--group", "mail")
    assert code == 0, err
    assert _next_lines(err) == ["next: coophost host check h4"]
    code, _, err = cli("-i", str(coop), "host", "remove", "h4")
    assert code == 0, err
    assert _next_lines(err) == ["next: coophost deploy"]


def test_json_output_has_no_next_line(coop: Path, cli) -> None:
    code, out, err = cli("-i", str(coop), "member", "move", "ada-books", "mail", "h1",
                         "--record-only", "--json")
    assert code == 0, err
    assert json.loads(out)["changed"] is True
    assert "next:" not in out + err


def test_dns_records_keep_stdout_a_zone_and_say_next_on_stderr(coop: Path, cli) -> None:
    code, out, err = cli("-i", str(coop), "dns", "records")
    assert code == 0, err
    assert "next:" not in out
    assert _next_lines(err) == ["next: publish these at the domains' DNS, then coophost dns "
                                "check"]


def test_no_change_says_nothing_next(coop: Path, cli) -> None:
    code, out, err = cli("-i", str(coop), "member", "suspend", "ada-books", "--why", "x")
    assert code == 0, err
    code, out, err = cli("-i", str(coop), "member", "suspend", "ada-books", "--why", "x")
    assert code == 0 and "nothing changed" in out
    assert _next_lines(err) == []


@pytest.mark.parametrize("args", [
    ["plan", "--host", "hh1"],
    ["render", "--host", "hh1"],
    ["host", "remove", "hh1"],
    ["member", "move", "ada-books", "mail", "hh1"],
])
def test_an_unknown_host_names_the_closest_one(coop: Path, cli, args: list[str]) -> None:
    before = (coop / "hosts.yml").read_bytes()
    code, _, err = cli("-i", str(coop), *args)
    assert code == 2, err
    flat = " ".join(err.split())
    assert "no host 'hh1' in hosts.yml" in flat
    assert "did you mean 'h1'? (`coophost host list` shows them)" in flat
    assert (coop / "hosts.yml").read_bytes() == before


def test_an_unknown_host_far_from_any_points_to_the_list(coop: Path, cli) -> None:
    code, _, err = cli("-i", str(coop), "plan", "--host", "zzzzzz")
    flat = " ".join(err.split())
    assert code == 2 and "no host 'zzzzzz' in hosts.yml" in flat
    assert "did you mean" not in flat and "`coophost host list` shows them" in flat


@pytest.mark.parametrize("args", [
    ["deploy", "--service", "mial"],
    ["service", "enable", "ada-books", "mial"],
    ["requests", "file", "ada-books", "mial"],
])
def test_an_unknown_service_names_the_closest_one(coop: Path, cli, args: list[str]) -> None:
    code, _, err = cli("-i", str(coop), *args)
    assert code == 2, err
    flat = " ".join(err.split())
    assert "no service 'mial'" in flat
    assert "did you mean 'mail'? (`coophost service list` shows them)" in flat


def test_times_read_alike_from_a_unix_time_an_iso_string_or_a_datetime() -> None:
    moment = dt.datetime(2026, 12, 6, 21, 40, 5, tzinfo=dt.UTC)
    shown = "2026-12-06 21:40 UTC"
    assert when(moment.timestamp()) == shown
    assert when("2026-12-06T21:40:05Z") == shown
    assert when("2026-12-06T22:40:05+01:00") == shown
    assert when(moment) == shown
    assert when(None) == "" and when("") == ""
    assert when("not a time") == "not a time"


def test_tables_share_one_style_and_show_times_in_one_format(coop: Path, cli) -> None:
    code, _, err = cli("-i", str(coop), "member", "add", "zed", "--name", "Zed",
                       "--contact", "zed@zed.test", "--domain", "zed.test")
    assert code == 0, err
    code, _, err = cli("-i", str(coop), "requests", "file", "zed", "mail",
                       "--set", "mailboxes=[info]")
    assert code == 0, err
    outputs = []
    for args in (["requests", "list"], ["host", "list"], ["runs", "list"]):
        code, out, err = cli("-i", str(coop), *args)
        assert code == 0, err
        outputs.append(out)
    boxes = set("│┃─━┏┓┗┛┡┩╇└┘┌┐")
    assert not boxes & set("".join(outputs))
    header, row = outputs[0].splitlines()[:2]
    assert header.split()[:6] == ["id", "member", "service", "settings", "state", "filed"]
    filed = json.loads(cli("-i", str(coop), "requests", "list", "--json")[1])[0]["filed"]
    assert when(filed) in row and when(filed).endswith(" UTC")
