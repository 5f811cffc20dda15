"""Mailbox passwords: generated per mailbox, kept in the vault, hosts get only argon2id hashes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from coophost.desired.render import MemberKeyed, yaml_block
from coophost.desired.units import compute
from coophost.errors import CoophostError
from coophost.registry.catalogue import load_catalogue, parse_service
from coophost.registry.loader import load_coop
from coophost.secrets import SecretRef, SecretStore, is_hash_entry, item_keys, parse_secrets_file

MEMBER = "dune-press"
MAILBOXES = ("editors", "submissions")


class _Loader(yaml.SafeLoader):
    pass


_Loader.add_constructor("!unsafe", lambda loader, node: loader.construct_scalar(node))
_Loader.add_constructor("!vault", lambda loader, node: ("vault", loader.construct_scalar(node)))


def _owner(coop: Path, slug: str = MEMBER) -> str:
    """The owner key (slug and life) the member's secrets file is named by."""
    from coophost.registry.loader import load_registry

    return load_registry(coop, need_hosts=False).registry.members[slug].owner


def _store(coop: Path) -> SecretStore:
    settings, _ = load_coop(coop)
    return SecretStore(coop, settings.vault, load_catalogue())


def _rendered_hashes(coop: Path, store: SecretStore) -> dict[str, str]:
    """The decrypted mailbox hashes of MEMBER, read back from the rendered host files."""
    for path in sorted((coop / "host_vars").glob("*.yml")):
        data = yaml.load(path.read_text(), Loader=_Loader)
        for unit in data["coophost_mail_units"]:
            if unit["member"]["slug"] == MEMBER:
                return {mailbox: store.vault.decrypt(text).decode()
                        for mailbox, (_, text) in unit["secrets"]["mailbox_password_hashes"]
                        .items()}
    raise AssertionError(f"{MEMBER} is rendered on no host")


def _render(cli: Any, coop: Path) -> str:
    code, out, err = cli("-i", str(coop), "render")
    assert code == 0, err
    return out + err


def test_hash_verifies_the_stored_password_with_dovecot_parameters(coop: Path, cli) -> None:
    from argon2 import PasswordHasher, extract_parameters

    _render(cli, coop)
    store = _store(coop)
    passwords = store.reveal(_owner(coop))["mail"]
    hashes = _rendered_hashes(coop, store)
    assert sorted(hashes) == list(MAILBOXES)
    for mailbox in MAILBOXES:
        password = passwords[f"mailbox_passwords/{mailbox}"]
        assert len(password) == 24
        scheme, _, encoded = hashes[mailbox].partition("}")
        assert scheme == "{ARGON2ID"
        assert encoded.startswith("$argon2id$v=19$m=65536,t=3,p=1$")
        params = extract_parameters(encoded)
        assert (params.parallelism, params.memory_cost, params.time_cost) == (1, 65536, 3)
        assert PasswordHasher().verify(encoded, password)
    assert hashes["editors"] != hashes["submissions"]


def test_clear_password_only_in_secrets_show(coop: Path, cli) -> None:
    outputs = _render(cli, coop)
    store = _store(coop)
    password = store.reveal(_owner(coop))["mail"]["mailbox_passwords/editors"]
    on_disk = b"".join(p.read_bytes() for p in coop.rglob("*") if p.is_file())
    assert password.encode() not in on_disk
    for args in (["plan"], ["plan", "--json"], ["member", "show", MEMBER, "--json"],
                 ["render"], ["render", "--out", str(coop / "elsewhere")]):
        outputs += "".join(cli("-i", str(coop), *args)[1:])
    assert password not in outputs
    assert "$argon2id$" not in outputs
    entries = parse_secrets_file((coop / "secrets" / f"{_owner(coop)}.yml").read_text())["mail"]
    assert set(entries) == {"dkim_key", *(k for m in MAILBOXES for k in item_keys(
        "mailbox_passwords", m))}
    assert all(text.startswith("$ANSIBLE_VAULT;1.1;AES256") for text in entries.values())
    code, shown, _ = cli("-i", str(coop), "secrets", "show", MEMBER, "mail",
                         "mailbox_passwords/editors")
    assert code == 0 and shown.strip() == f"mail.mailbox_passwords/editors: {password}"
    code, shown, _ = cli("-i", str(coop), "secrets", "show", MEMBER, "--json")
    assert code == 0 and password in shown and "argon2" not in shown


def test_rendering_twice_gives_identical_files_and_hashes(coop: Path, cli) -> None:
    before = compute(coop, use_cache=False).host_hashes
    _render(cli, coop)
    first = {p: p.read_bytes() for p in coop.rglob("*.yml")}
    _render(cli, coop)
    assert {p: p.read_bytes() for p in coop.rglob("*.yml")} == first
    assert compute(coop, use_cache=False).host_hashes == before


def test_new_mailbox_gets_a_password_others_keep_theirs(coop: Path, cli) -> None:
    _render(cli, coop)
    store = _store(coop)
    old = _rendered_hashes(coop, store)
    path = coop / "members" / f"{MEMBER}.yml"
    path.write_text(path.read_text().replace("[editors, submissions]",
                                             "[editors, submissions, first.last]"))
    _render(cli, coop)
    store = _store(coop)
    new = _rendered_hashes(coop, store)
    assert set(new) == {*MAILBOXES, "first.last"}
    assert {m: new[m] for m in MAILBOXES} == old


def test_hash_entries_never_revealed() -> None:
    assert is_hash_entry(item_keys("mailbox_passwords", "a.b")[1])
    assert not is_hash_entry(item_keys("mailbox_passwords", "a.b")[0])
    assert not is_hash_entry("dkim_key")


@pytest.mark.parametrize("key", ["{{ x }}", "a: b", "A", "", "a\nb", "-x", "a b"])
def test_member_keyed_mapping_refuses_unsafe_keys(key: str) -> None:
    with pytest.raises(TypeError):
        yaml_block({"m": MemberKeyed({key: 1})}, 0)


def test_member_keyed_mapping_renders_unsafe_keys() -> None:
    ref = SecretRef("m", "mail", "mailbox_passwords", "first.last")
    text = "root:" + yaml_block({"h": MemberKeyed({"first.last": ref, "a+b": 1})}, 0,
                                lambda r: f"$ANSIBLE_VAULT;1.1;AES256\n{r.key}\n")
    assert '!unsafe "first.last": !vault |' in text
    assert yaml.load(text, Loader=_Loader)["root"]["h"]["a+b"] == 1
    assert ref.key == "m/mail/mailbox_passwords/first.last"


@pytest.mark.parametrize(("secrets", "message"), [
    ("[{name: p, kind: per_mailbox_password}]", "mailboxes"),
    ("[{name: p, kind: password, var: Bad-Name}]", "identifier"),
    ("[{name: 'a/b', kind: password}]", "identifier"),
])
def test_catalogue_checks_secret_specs(secrets: str, message: str) -> None:
    raw = (f"name: x\ndescription: x\ngroup: x\nrole: x\nstatus: available\n"
           f"parameters: {{}}\ncost: {{}}\nsecrets: {secrets}\ndns: []\ndata: {{}}\n").encode()
    with pytest.raises(CoophostError, match=message):
        parse_service(raw, "catalogue/x.yml")


@pytest.mark.skipif(shutil.which("ansible-playbook", path=str(Path(sys.executable).parent))
                    is None, reason="ansible-playbook is not installed beside this Python")
def test_ansible_reads_the_hashes_as_the_mail_role_does(coop: Path, cli, tmp_path: Path
                                                        ) -> None:
    """Ansible decrypts the !vault hash under its !unsafe mailbox key, as users.j2 looks it up."""
    from argon2 import PasswordHasher

    _render(cli, coop)
    host = next(p.stem for p in (coop / "host_vars").glob("*.yml")
                if f'slug: !unsafe "{MEMBER}"' in p.read_text())
    work = tmp_path / "ansible"
    (work / "host_vars").mkdir(parents=True)
    (work / "host_vars" / "localhost.yml").write_text(
        (coop / "host_vars" / f"{host}.yml").read_text()
        + f"ansible_python_interpreter: {sys.executable}\n")
    (work / "inventory.yml").write_text("all:\n  hosts:\n    localhost:\n"
                                        "      ansible_connection: local\n")
    out = work / "out.txt"
    (work / "play.yml").write_text(
        "- hosts: localhost\n  gather_facts: false\n  tasks:\n"
        "    - ansible.builtin.copy:\n"
        f"        dest: {out}\n"
        "        content: |\n"
        "          {% for unit in coophost_mail_units if unit.member.slug == '" + MEMBER + "' %}"
        "{% for mailbox in unit.settings.mailboxes %}"
        "{{ mailbox }}:{{ unit.secrets.mailbox_password_hashes[mailbox] | string }}\n"
        "          {% endfor %}{% endfor %}\n"
        "      no_log: true\n")
    password_file = tmp_path / "vault-pass"
    password_file.write_text(os.environ["COOPHOST_VAULT_PASSWORD"])
    env = {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_LOCALHOST_WARNING": "0",
           "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0"}
    result = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i",
         str(work / "inventory.yml"), str(work / "play.yml"),
         "--vault-password-file", str(password_file)],
        capture_output=True, text=True, env=env, check=False, cwd=work)
    assert result.returncode == 0, result.stdout + result.stderr
    passwords = _store(coop).reveal(_owner(coop))["mail"]
    lines = dict(line.strip().split(":", 1) for line in out.read_text().splitlines()
                 if line.strip())
    assert sorted(lines) == list(MAILBOXES)
    for mailbox, value in lines.items():
        assert value.startswith("{ARGON2ID}$argon2id$")
        assert PasswordHasher().verify(value.removeprefix("{ARGON2ID}"),
                                       passwords[f"mailbox_passwords/{mailbox}"])
        assert passwords[f"mailbox_passwords/{mailbox}"] not in result.stdout
