"""SSH public keys: parsed by a real parser, and each belongs to one member at most."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from coophost.errors import ValidationError
from coophost.registry import checks


def new_key(comment: str = "someone@laptop") -> str:
    public = ed25519.Ed25519PrivateKey.generate().public_key()
    line = public.public_bytes(serialization.Encoding.OpenSSH,
                               serialization.PublicFormat.OpenSSH).decode()
    return f"{line} {comment}"


def set_keys(coop: Path, slug: str, keys: list[str]) -> None:
    path = coop / "members" / f"{slug}.yml"
    text = path.read_text().replace("ssh_keys: []", "ssh_keys:\n" + "".join(
        f"  - {key!r}\n" for key in keys))
    assert text != path.read_text()
    path.write_text(text)


def test_one_key_for_two_members_is_refused_naming_both_files(coop: Path, cli) -> None:
    key = new_key("ada@laptop")
    set_keys(coop, "ada-books", [key])
    set_keys(coop, "dune-press", [new_key(), key.rsplit(" ", 1)[0] + " other-comment"])
    code, _, err = cli("-i", str(coop), "plan")
    assert code == 2, err
    assert "members/dune-press.yml: ssh_keys[1]: " in err
    assert "already belongs to member 'ada-books' (members/ada-books.yml)" in err


def test_member_add_refuses_another_members_key(coop: Path, cli) -> None:
    key = new_key()
    set_keys(coop, "ada-books", [key])
    code, _, err = cli("-i", str(coop), "member", "add", "zed", "--name", "Zed",
                       "--contact", "zed@zed.test", "--ssh-key", key)
    assert code == 2, err
    assert "members/zed.yml: ssh_keys[0]: " in err
    assert "members/ada-books.yml" in err
    assert not (coop / "members" / "zed.yml").exists()


def test_distinct_keys_are_accepted(coop: Path, cli) -> None:
    set_keys(coop, "ada-books", [new_key()])
    set_keys(coop, "dune-press", [new_key()])
    code, _, err = cli("-i", str(coop), "plan")
    assert code in (0, 1), err


def _blob(*fields: bytes) -> str:
    return base64.b64encode(b"".join(len(f).to_bytes(4, "big") + f for f in fields)).decode()


EXPONENT = bytes([1, 0, 1])
OFF_CURVE = bytes([4]) + bytes([1]) * 64
BAD_KEYS = [
    ("a type name and nothing else", "ssh-ed25519 " + _blob(b"ssh-ed25519")),
    ("an ed25519 key of the wrong length", "ssh-ed25519 " + _blob(b"ssh-ed25519", b"x" * 5)),
    ("an RSA key without a modulus", "ssh-rsa " + _blob(b"ssh-rsa", EXPONENT)),
    ("an ECDSA point that is not on the curve", "ecdsa-sha2-nistp256 "
     + _blob(b"ecdsa-sha2-nistp256", b"nistp256", OFF_CURVE)),
]


@pytest.mark.parametrize(("why", "line"), BAD_KEYS, ids=[case[0] for case in BAD_KEYS])
def test_a_blob_without_key_material_is_refused(why: str, line: str) -> None:
    with pytest.raises(ValidationError) as caught:
        checks.ssh_public_key(line, "members/x.yml", "ssh_keys[0]")
    assert caught.value.field == "ssh_keys[0]"
    assert caught.value.value == line
    assert "not a usable" in caught.value.problem


def test_real_keys_are_accepted() -> None:
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    for private in (ed25519.Ed25519PrivateKey.generate(),
                    rsa.generate_private_key(public_exponent=65537, key_size=2048),
                    ec.generate_private_key(ec.SECP256R1())):
        line = private.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
        assert checks.ssh_public_key(line + " me@host", "f", "k") == line + " me@host"
    fido = "sk-ssh-ed25519@openssh.com " + _blob(b"sk-ssh-ed25519@openssh.com", b"k" * 32,
                                                  b"ssh:")
    assert checks.ssh_public_key(fido, "f", "k") == fido
