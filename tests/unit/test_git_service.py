"""The git service's registry side: settings checks, the role's variables, hashed password."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from coophost.desired.hostvars import host_files
from coophost.registry.catalogue import load_catalogue
from coophost.registry.loader import load_registry
from coophost.secrets import SecretStore, is_hash_entry, parse_secrets_file

pytestmark = pytest.mark.usefixtures("coming_services_available")

KEY_A = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIC7fGl0nW0s9yCk0AMuBpNNO6wIlx2fC4n6u0kFqtQ8x alice"


class _Tags(yaml.SafeLoader):
    """Reads rendered host vars: !unsafe strings as strings, !vault values as their text."""


_Tags.add_constructor("!unsafe", lambda loader, node: loader.construct_scalar(node))
_Tags.add_constructor("!vault", lambda loader, node: loader.construct_scalar(node))


def _enable_git(cli, coop: Path, *settings: str) -> tuple[int, str, str]:
    args = [f"--set={s}" for s in settings]
    return cli("-i", str(coop), "service", "enable", "cycle-works", "git", *args)


def test_git_unit_gets_its_vhost_ssh_keys_and_only_a_bcrypt_hash(cli, coop: Path) -> None:
    assert cli("-i", str(coop), "member", "edit", "cycle-works", "--add-ssh-key", KEY_A)[0] == 0
    code, out, err = _enable_git(cli, coop, "public_web=false")
    assert code == 0, out + err
    texts, store = host_files(coop)
    store.save()
    units = {host: yaml.load(text, Loader=_Tags) for host, text in texts.items()}
    placed = [(host, u) for host, data in units.items() for u in data["coophost_git_units"]]
    assert len(placed) == 1
    host, unit = placed[0]
    assert unit["member"]["ssh_keys"] == [KEY_A]
    assert unit["settings"] == {"vhost": "git.cycle-works.test", "backend": "gitolite",
                                "quota_mb": 2048, "default_branch": "main",
                                "public_web": False}
    assert set(unit["secrets"]) == {"http_password_hash"}
    assert "git.cycle-works.test" in units[host]["coophost_tls_vhosts"]
    assert all("git.cycle-works.test" not in data["coophost_tls_vhosts"]
               for h, data in units.items() if h != host)
    # mail units never get the member's keys (a new key must not redeploy mail)
    assert all("ssh_keys" not in u["member"] for data in units.values()
               for u in data["coophost_mail_units"])
    # the host gets the bcrypt hash of the stored password, never the password
    loaded = load_registry(coop)
    secrets = SecretStore(coop, loaded.registry.coop.vault, load_catalogue())
    owner = loaded.registry.members["cycle-works"].owner
    password = secrets.stored(owner, "git", "http_password")
    digest = secrets.stored(owner, "git", "http_password.bcrypt")
    assert password and len(password) == 24 and digest and digest.startswith("$2b$")
    import bcrypt

    assert bcrypt.checkpw(password.encode(), digest.encode())
    rendered = secrets.vault.decrypt(unit["secrets"]["http_password_hash"]).decode()
    assert rendered == digest
    shown = secrets.reveal(owner)["git"]
    assert shown == {"http_password": password}  # `secrets show` leaves the hash out
    stored = parse_secrets_file(secrets.path(owner).read_text())["git"]
    assert [k for k in stored if is_hash_entry(k)] == ["http_password.bcrypt"]


def test_git_hash_is_made_once_and_rendering_again_changes_nothing(cli, coop: Path) -> None:
    assert _enable_git(cli, coop)[0] == 0
    first, store = host_files(coop)
    store.save()
    again, store = host_files(coop)
    assert store.save() == []
    assert first == again


@pytest.mark.parametrize("branch", ["main", "trunk", "release/1.x", "dev_2", "a-b"])
def test_default_branch_accepted(cli, coop: Path, branch: str) -> None:
    code, out, err = _enable_git(cli, coop, f"default_branch={branch}")
    assert code == 0, out + err


@pytest.mark.parametrize("branch", ["-main", "a..b", "a/.b", "x.lock", "a//b", "a b", "HEAD",
                                    "a/", "ma~in", "br:x", "{{ x }}"])
def test_default_branch_refused_naming_file_field_value(cli, coop: Path, branch: str) -> None:
    before = (coop / "members" / "cycle-works.yml").read_bytes()
    code, out, err = _enable_git(cli, coop, f"default_branch={branch}")
    assert code == 2, out + err
    assert "cycle-works.yml" in err and "services.git.default_branch" in err
    assert (coop / "members" / "cycle-works.yml").read_bytes() == before
