"""The integration suite's secret search can fail: it finds whole secrets, key lines and
JSON-escaped forms, and decrypts every `!vault` block of a co-op directory."""

from __future__ import annotations

import json
from pathlib import Path

from coophost.registry.catalogue import SecretSpec
from coophost.secrets import format_secrets_file, generate
from tests.integration.secretscan import (
    decrypt_all,
    fragments,
    leaks,
    shows_new_password,
    vault_blocks,
)

KEY = generate(SecretSpec(name="dkim_key", kind="rsa_private_key", bits=1024))
PASSWORD = "Zq8v2LmT0pXc4RbN7sWd1KyH"


def _encrypt(value: str, password: bytes) -> str:
    from ansible.parsing.vault import VaultLib, VaultSecret

    return VaultLib([("default", VaultSecret(password))]).encrypt(value).decode()


def test_a_whole_secret_is_found() -> None:
    assert leaks([PASSWORD], [("out", f"ok {PASSWORD} done")])


def test_one_line_of_a_private_key_is_found() -> None:
    line = KEY.splitlines()[3]
    found = leaks([KEY], [("log", f"... {line} ...")])
    assert found and "log" in found[0]


def test_the_json_escaped_form_of_a_key_is_found() -> None:
    escaped = json.dumps({"k": KEY})
    assert KEY not in escaped
    assert leaks([KEY], [("event", escaped)])


def test_pem_armour_and_short_pieces_are_not_fragments() -> None:
    armour = [line for line in KEY.splitlines() if line.startswith("-----")]
    assert armour and not set(armour) & fragments(KEY)
    assert fragments("short") == set()


def test_clean_places_report_nothing() -> None:
    assert leaks([PASSWORD, KEY], [("out", "deployed 3 hosts, changed=4")]) == []


def test_every_vault_block_of_a_coop_directory_is_decrypted(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    # Key names that begin with hex letters must not be taken for ciphertext lines.
    data = {"mail": {"a_key": _encrypt(PASSWORD, b"pw"), "dkim_key": _encrypt(KEY, b"pw"),
                     "mailbox_passwords/ada": _encrypt(PASSWORD + "x", b"pw")}}
    (secrets / "ada.yml").write_text(format_secrets_file("ada", data))
    assert len(list(vault_blocks((secrets / "ada.yml").read_text()))) == 3
    assert sorted(decrypt_all(tmp_path, b"pw")) == sorted([KEY, PASSWORD, PASSWORD + "x"])


def test_only_the_commands_that_show_a_new_password_have_their_stdout_left_out() -> None:
    assert shows_new_password(["-i", "coop", "secrets", "rotate", "ada-books"])
    assert shows_new_password(["--remote", "root@127.0.0.1:22", "--identity", "key",
                               "--known-hosts", "kh", "password", "orders"])
    assert not shows_new_password(["--remote", "root@127.0.0.1:22", "--identity", "password",
                                   "status"])
    assert not shows_new_password(["--remote", "root@127.0.0.1:22", "request", "mail",
                                   "--set", "password=x"])
    assert not shows_new_password(["-i", "coop", "deploy"])
