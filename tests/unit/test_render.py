"""Rendering: golden host vars files, YAML quoting, and a real ansible-playbook run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from coophost import __version__
from coophost.desired.hostvars import host_files
from coophost.desired.render import unit_vars, yaml_block
from coophost.desired.units import compute
from coophost.registry.loader import load_registry
from coophost.registry.yamlio import quote
from coophost.secrets import SecretRef

GOLDEN = Path(__file__).parent / "golden"
HOSTILE_NAME = "{{ lookup('pipe', 'id') }} $(touch /tmp/pwned) \"quoted\" \\ 'x' \u00e9"


def fake_vault(ref: SecretRef) -> str:
    return f"$ANSIBLE_VAULT;1.1;AES256\nfake-ciphertext-for-{ref.key.replace('/', '-')}\n"


class _Loader(yaml.SafeLoader):
    pass


_Loader.add_constructor("!unsafe", lambda loader, node: loader.construct_scalar(node))
_Loader.add_constructor("!vault", lambda loader, node: ("vault", loader.construct_scalar(node)))


@pytest.mark.parametrize("text", ["plain", HOSTILE_NAME, "tab\there", "line\nbreak", "\u2028",
                                  "emoji \U0001f600", "\x85", "back\\slash", '"', ""])
def test_quote_round_trips(text: str) -> None:
    assert yaml.load(f"x: !unsafe {quote(text)}", Loader=_Loader)["x"] == text


def test_yaml_block_round_trips() -> None:
    data = {"a": [{"x": 1, "y": HOSTILE_NAME, "z": [True, None, {"q": []}]}, "s", [1, 2]],
            "b": {}, "c": SecretRef("m", "mail", "dkim_key")}
    text = "root:" + yaml_block(data, 0, fake_vault)
    loaded = yaml.load(text, Loader=_Loader)["root"]
    assert loaded["a"] == data["a"]
    assert loaded["c"][0] == "vault"


def test_golden_host_vars(coop: Path) -> None:
    """The rendered vars files of the lab co-op match tests/unit/golden/ (UPDATE_GOLDEN=1)."""
    texts, _ = host_files(coop)
    for host, text in texts.items():
        golden = GOLDEN / f"lab-{host}.yml"
        rendered = _with_fake_vault(text)
        if os.environ.get("UPDATE_GOLDEN"):
            golden.write_text(rendered)
        assert rendered == golden.read_text(), f"{host} differs from {golden}"


def _with_fake_vault(text: str) -> str:
    """Mask what legitimately varies: salted ciphertext, the host hash (role versions)."""
    out, skipping = [], False
    for line in text.splitlines():
        if line.startswith("coophost_host_hash:"):
            line = "coophost_host_hash: <host hash>"
        line = line.replace(f"coophost {__version__} ", "coophost <version> ")
        if line.rstrip().endswith("!vault |"):
            out.append(line)
            out.append(" " * (len(line) - len(line.lstrip()) + 2) + "<vault ciphertext>")
            skipping = True
            continue
        if skipping and line.lstrip() and set(line.strip()) <= set("0123456789abcdef"):
            continue
        if skipping and line.strip().startswith("$ANSIBLE_VAULT"):
            continue
        skipping = False
        out.append(line)
    return "\n".join(out) + "\n"


@pytest.mark.usefixtures("coming_services_available")
def test_unit_vars_never_hold_secret_values(coop: Path, cli) -> None:
    code, _, err = cli("-i", str(coop), "service", "enable", "bread-coop", "nextcloud")
    assert code == 0, err
    registry = load_registry(coop).registry
    member = registry.members["bread-coop"]
    from coophost.registry.catalogue import load_catalogue

    variables = unit_vars(member, load_catalogue().services["nextcloud"])
    assert variables["secrets"] == {
        "db_password": SecretRef(member.owner, "nextcloud", "db_password"),
        "admin_password": SecretRef(member.owner, "nextcloud", "admin_password")}


def test_hashes_are_stable_and_content_sensitive(coop: Path) -> None:
    first = compute(coop, use_cache=False)
    again = compute(coop, use_cache=False)
    assert first.host_hashes == again.host_hashes
    path = coop / "members" / "ada-books.yml"
    path.write_text(path.read_text().replace("quota_mb: 1024", "quota_mb: 2000"))
    changed = compute(coop, use_cache=False)
    differing = {k for k in first.units if first.units[k].hash != changed.units[k].hash}
    assert differing == {("ada-books", "mail")}


@pytest.mark.skipif(shutil.which("ansible-playbook", path=str(Path(sys.executable).parent))
                    is None, reason="ansible-playbook is not installed beside this Python")
def test_ansible_playbook_keeps_member_strings_literal(coop: Path, tmp_path: Path) -> None:
    """A member's Jinja in a display name reaches Ansible as text: !unsafe holds."""
    path = coop / "members" / "ada-books.yml"
    path.write_text(path.read_text().replace("name: Ada's Books",
                                             "name: \"{{ lookup('pipe', 'id') }}\""))
    texts, _ = host_files(coop)
    host = next(h for h, t in texts.items() if "ada-books" in t)
    work = tmp_path / "ansible"
    (work / "host_vars").mkdir(parents=True)
    (work / "host_vars" / "localhost.yml").write_text(
        texts[host] + f"ansible_python_interpreter: {sys.executable}\n")
    (work / "inventory.yml").write_text("all:\n  hosts:\n    localhost:\n"
                                        "      ansible_connection: local\n")
    (work / "play.yml").write_text(
        "- hosts: localhost\n  gather_facts: false\n  tasks:\n"
        "    - ansible.builtin.copy:\n"
        "        dest: " + str(work / "out.txt") + "\n"
        "        content: \"{{ coophost_mail_units | map(attribute='member') |"
        " selectattr('slug', 'equalto', 'ada-books') | map(attribute='name') | first }}\"\n")
    env = {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_LOCALHOST_WARNING": "0",
           "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0"}
    result = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i",
         str(work / "inventory.yml"), str(work / "play.yml"),
         "--vault-password-file", str(_password_file(tmp_path))],
        capture_output=True, text=True, env=env, check=False, cwd=work)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (work / "out.txt").read_text() == "{{ lookup('pipe', 'id') }}"
    assert "uid=" not in result.stdout


def _password_file(tmp_path: Path) -> Path:
    path = tmp_path / "vault-pass"
    path.write_text(os.environ["COOPHOST_VAULT_PASSWORD"])
    return path
