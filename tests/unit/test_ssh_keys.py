"""SSH public keys: parsed by a real parser, and each belongs to one member at most."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519


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
