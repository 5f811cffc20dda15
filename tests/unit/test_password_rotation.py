"""Password rotation: a new vault-encrypted password, a counted rotation that changes the unit
hash (never the password in it), an audit entry without the password, bad input refused."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from coophost.desired.settings import ROTATED_PREFIX, SettingChange
from coophost.desired.units import compute
from coophost.members.audit import read_audit
from coophost.members.passwords import bumped, select
from coophost.members.shell import run
from coophost.registry.catalogue import load_catalogue
from coophost.registry.loader import load_coop, load_registry
from coophost.secrets import SecretStore, item_keys, parse_secrets_file

ADA = "ada-books"
CYCLE = "cycle-works"


def _render(cli: Any, coop: Path) -> None:
    code, _, err = cli("-i", str(coop), "render")
    assert code == 0, err


def _passwords(coop: Path, slug: str, service: str = "mail") -> dict[str, str]:
    settings, _ = load_coop(coop)
    owner = load_registry(coop, need_hosts=False).registry.members[slug].owner
    return SecretStore(coop, settings.vault, load_catalogue()).reveal(owner).get(service, {})


def _unit_hash(coop: Path, slug: str, service: str = "mail") -> str:
    return compute(coop, use_cache=False).units[(slug, service)].hash


def _snapshot(coop: Path) -> dict[str, bytes]:
    return {str(p.relative_to(coop)): p.read_bytes() for p in sorted(coop.rglob("*"))
            if p.is_file() and ".coophost" not in p.parts}


def test_rotating_one_mailbox_replaces_only_its_password_and_changes_the_unit_hash(
        coop: Path, cli) -> None:  # type: ignore[no-untyped-def]
    _render(cli, coop)
    before = _passwords(coop, ADA)
    hash_before = _unit_hash(coop, ADA)
    other_hash = _unit_hash(coop, "bread-coop")
    code, out, err = cli("-i", str(coop), "secrets", "rotate", ADA, "--mailbox", "orders",
                         "--json")
    assert code == 0, err
    shown = json.loads(out)
    after = _passwords(coop, ADA)
    [entry] = shown["rotated"]
    assert entry["login"] == "orders@ada-books.test"
    assert entry["password"] == after["mailbox_passwords/orders"]
    assert after["mailbox_passwords/orders"] != before["mailbox_passwords/orders"]
    assert len(after["mailbox_passwords/orders"]) == 24
    assert after["mailbox_passwords/ada"] == before["mailbox_passwords/ada"]
    assert "coophost deploy" in shown["next"]
    assert _unit_hash(coop, ADA) != hash_before
    assert _unit_hash(coop, "bread-coop") == other_hash
    member = load_registry(coop, need_hosts=False).registry.members[ADA]
    assert member.rotated == {"mail": {"mailbox_passwords/orders": 1}}


def test_the_stored_hash_is_the_new_passwords_and_stays_vault_encrypted(coop: Path, cli) -> None:  # type: ignore[no-untyped-def]
    from argon2 import PasswordHasher

    _render(cli, coop)
    code, out, err = cli("-i", str(coop), "secrets", "rotate", ADA, "--mailbox", "ada")
    assert code == 0, err
    new = _passwords(coop, ADA)["mailbox_passwords/ada"]
    assert f"mail ada@ada-books.test: {new}" in out
    owner = load_registry(coop, need_hosts=False).registry.members[ADA].owner
    text = (coop / "secrets" / f"{owner}.yml").read_text()
    assert new not in text
    settings, _ = load_coop(coop)
    store = SecretStore(coop, settings.vault, load_catalogue())
    _, hash_key = item_keys("mailbox_passwords", "ada")
    stored = parse_secrets_file(text)["mail"][hash_key]
    dovecot = store.vault.decrypt(stored).decode()
    assert PasswordHasher().verify(dovecot.removeprefix("{ARGON2ID}"), new)


def test_without_mailbox_every_mailbox_and_hashed_login_is_rotated(coop: Path, cli) -> None:  # type: ignore[no-untyped-def]
    _render(cli, coop)
    mail, git = _passwords(coop, CYCLE), _passwords(coop, CYCLE, "git")
    code, out, err = cli("-i", str(coop), "secrets", "rotate", CYCLE, "--json")
    assert code == 0, err
    logins = sorted(e["login"] for e in json.loads(out)["rotated"])
    assert logins == sorted(["hello@cycle-works.test", "repairs@cycle-works.test", CYCLE])
    new_mail, new_git = _passwords(coop, CYCLE), _passwords(coop, CYCLE, "git")
    assert all(new_mail[k] != mail[k] for k in mail if k.startswith("mailbox_passwords/"))
    assert new_mail["dkim_key"] == mail["dkim_key"]  # keys in DNS are never rotated here
    assert new_git["http_password"] != git["http_password"]
    member = load_registry(coop, need_hosts=False).registry.members[CYCLE]
    assert member.rotated == {"mail": {"mailbox_passwords/hello": 1,
                                       "mailbox_passwords/repairs": 1},
                              "git": {"http_password": 1}}


def test_the_audit_entry_names_who_and_which_mailbox_but_never_the_password(
        coop: Path, cli, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("COOPHOST_ACTOR", "sam")
    _render(cli, coop)
    code, out, err = cli("-i", str(coop), "secrets", "rotate", ADA, "--mailbox", "orders",
                         "--json")
    assert code == 0, err
    password = json.loads(out)["rotated"][0]["password"]
    [event] = [e for e in read_audit(coop) if e["action"] == "password rotated"]
    assert event["by"] == "sysadmin sam"
    assert event["member"] == ADA
    assert event["mailboxes"] == ["orders"]
    assert event["logins"] == ["orders@ada-books.test"]
    assert password not in (coop / "audit.log").read_text()


def test_the_member_verb_shows_the_password_once_and_audits_the_member(coop: Path, cli) -> None:  # type: ignore[no-untyped-def]
    _render(cli, coop)
    out = io.BytesIO()
    assert run(coop, ADA, "password orders", out) == 0
    new = _passwords(coop, ADA)["mailbox_passwords/orders"]
    assert f"new password for orders@ada-books.test: {new}" in out.getvalue().decode()
    [event] = [e for e in read_audit(coop) if e["action"] == "password rotated"]
    assert event["by"] == f"member {ADA}" and event["mailboxes"] == ["orders"]
    assert new not in (coop / "audit.log").read_text()


@pytest.mark.parametrize("mailbox", ["order", "nobody"])
def test_a_mailbox_the_member_lacks_is_refused_naming_both_and_nothing_is_written(
        coop: Path, cli, mailbox: str) -> None:  # type: ignore[no-untyped-def]
    _render(cli, coop)
    before = _snapshot(coop)
    code, _, err = cli("-i", str(coop), "secrets", "rotate", ADA, "--mailbox", mailbox)
    assert code == 2
    assert f"member {ADA} has no mailbox {mailbox!r}" in err
    if mailbox == "order":
        assert "did you mean 'orders'?" in err
    else:
        assert "known: ada, orders" in err
    assert _snapshot(coop) == before


def test_the_member_verb_refuses_a_mailbox_it_lacks_with_exit_2(coop: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    before = _snapshot(coop)
    out = io.BytesIO()
    assert run(coop, ADA, "password ordres", out) == 2
    err = capsys.readouterr().err
    assert f"member {ADA} has no mailbox 'ordres'" in err and "did you mean 'orders'?" in err
    assert out.getvalue() == b""
    assert _snapshot(coop) == before


def test_an_unknown_member_is_refused_with_did_you_mean(coop: Path, cli) -> None:  # type: ignore[no-untyped-def]
    code, _, err = cli("-i", str(coop), "secrets", "rotate", "ada-book")
    assert code == 2
    assert "no member 'ada-book'" in err and "did you mean 'ada-books'?" in err


def test_bumped_counts_each_rotation_and_keeps_other_counts() -> None:
    coop_member = _member_with_mailboxes(("a", "b"))
    rotations = select(coop_member, load_catalogue(), "a")
    first = bumped({"git": {"http_password": 2}}, rotations)
    assert first == {"git": {"http_password": 2}, "mail": {"mailbox_passwords/a": 1}}
    assert bumped(first, rotations)["mail"] == {"mailbox_passwords/a": 2}


def test_the_plan_names_a_rotated_password_as_rotated_never_its_value() -> None:
    change = SettingChange(ROTATED_PREFIX + "mailbox_passwords/orders", None, "1")
    assert change.as_text() == "(password) mailbox_passwords/orders: password rotated (never -> 1)"
    again = SettingChange(ROTATED_PREFIX + "mailbox_passwords/orders", "1", "2")
    assert again.as_text().endswith("password rotated (1 -> 2)")


def test_plan_shows_the_unit_changed_because_a_password_was_rotated(
        coop: Path, cli, record_applied) -> None:  # type: ignore[no-untyped-def]
    _render(cli, coop)
    record_applied(coop)
    code, out, _ = cli("-i", str(coop), "plan")
    assert code == 0, out
    code, _, err = cli("-i", str(coop), "secrets", "rotate", ADA, "--mailbox", "orders")
    assert code == 0, err
    code, out, _ = cli("-i", str(coop), "plan")
    assert code == 1
    assert f"~ {ADA}/mail: change" in out
    assert "(password) mailbox_passwords/orders: password rotated (never -> 1)" in out
    assert "bread-coop" not in out


def test_a_bad_rotated_entry_in_a_member_file_is_refused(coop: Path, cli) -> None:  # type: ignore[no-untyped-def]
    path = coop / "members" / f"{ADA}.yml"
    path.write_text(path.read_text() + "rotated:\n  mail:\n    mailbox_passwords/ada: 0\n")
    code, _, err = cli("-i", str(coop), "plan")
    assert code == 2
    assert "rotated.mail.mailbox_passwords/ada" in err and "at least 1" in err


def _member_with_mailboxes(mailboxes: tuple[str, ...]) -> Any:
    from coophost.registry.model import Domain, Member

    return Member(slug="x-coop", name="X", contact="x@x.test", status="active",
                  domains=(Domain("x.test", "x.test"),), ssh_keys=(),
                  services={"mail": {"mailboxes": list(mailboxes), "domains": ["x.test"]}},
                  placement={})
