"""A wrong, replaced or lost vault password never starts a second set of secrets."""

from __future__ import annotations

from pathlib import Path

import pytest


def _secrets_state(coop: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((coop / "secrets").glob("*"))}


def test_a_wrong_vault_password_is_refused_before_anything_is_encrypted(
        coop: Path, cli, monkeypatch: pytest.MonkeyPatch) -> None:
    code, _, err = cli("-i", str(coop), "render")
    assert code == 0, err
    before = _secrets_state(coop)
    assert before, "the first render made no secrets file"
    # A new mailbox needs a new secret: with the wrong password it must not be made.
    member = coop / "members" / "ada-books.yml"
    member.write_text(member.read_text().replace("mailboxes: [ada, orders]",
                                                 "mailboxes: [ada, orders, newbox]"))
    monkeypatch.setenv("COOPHOST_VAULT_PASSWORD", "a-replaced-password")
    code, out, err = cli("-i", str(coop), "render")
    assert code == 2, out + err
    assert "vault password does not open" in err and "secrets" in err, err
    assert _secrets_state(coop) == before, "a secrets file changed under a wrong password"


def test_a_lost_password_file_is_not_recreated_once_secrets_exist(
        coop: Path, cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COOPHOST_VAULT_PASSWORD")
    code, _, err = cli("-i", str(coop), "render")
    assert code == 0, err
    password_file = coop / "vault-password"
    assert password_file.is_file(), "the lab co-op makes its password file on first need"
    before = _secrets_state(coop)
    password_file.unlink()
    member = coop / "members" / "ada-books.yml"  # a new mailbox needs the vault
    member.write_text(member.read_text().replace("mailboxes: [ada, orders]",
                                                 "mailboxes: [ada, orders, newbox]"))
    code, out, err = cli("-i", str(coop), "render")
    assert code == 2, out + err
    assert "is missing" in err and "encrypted" in err, err
    assert not password_file.exists(), "a new password file was made over existing secrets"
    assert _secrets_state(coop) == before
