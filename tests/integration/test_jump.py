"""A host behind a bastion, on real lab hosts: coophost's own SSH follows ~/.ssh/config's
ProxyJump as OpenSSH would, through h1 to h2's lab address, with both keys pinned in the
co-op's known_hosts and a changed key refused on either hop.

The ssh config and a known_hosts that pins h2 under its lab address (where the jump reaches
it) are written for the test; the controller never reaches that address directly.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from coophost.errors import HostKeyMismatch
from coophost.lab.lab import Lab, LabHost
from coophost.lab.mailcheck import lab_state
from coophost.registry.hosts import HostEntry, load_hosts
from coophost.ssh import check_host_key, connect, run
from tests.integration.conftest import LabInfo, coophost
from tests.integration.test_trust_hostkeys import container, logins

pytestmark = pytest.mark.lab

BASTION, BEHIND = "h1", "h2"


@pytest.fixture(scope="module", autouse=True)
def bastion_not_banned(lab: LabInfo) -> Iterator[None]:
    """h2's fail2ban ignores the bastion while these tests run, and is left as found.

    The refused connections of these tests come from the bastion's address, which h2's sshd
    jail counts like any other's (docs/production.md: a co-op lists its bastion in
    `common_fail2ban_ignoreip`). Set at run time only: the host's configuration is untouched.
    """
    bastion = next(h for h in lab_state(Lab(lab.name, lab.inventory)).hosts if h.name == BASTION)

    def jail(*words: str) -> None:
        subprocess.run(["docker", "exec", container(lab, BEHIND), "fail2ban-client", "set",
                        "sshd", *words, bastion.ip], capture_output=True, check=False)

    jail("unbanip")
    jail("addignoreip")
    yield
    time.sleep(2)  # let fail2ban read the journal's last lines while it still ignores them
    jail("delignoreip")
    jail("unbanip")


def known_line(names: str, key_line: str) -> str:
    kind, blob = key_line.split()[:2]
    return f"{names} {kind} {blob}\n"


@pytest.fixture
def jump(lab: LabInfo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
         ) -> tuple[HostEntry, Path, dict[str, object]]:
    state = lab_state(Lab(lab.name, lab.inventory))
    hosts = {h.name: h for h in state.hosts}
    entries = {e.name: e for e in load_hosts(lab.inventory)}
    bastion, behind = hosts[BASTION], hosts[BEHIND]
    key, user = entries[BEHIND].key_file, entries[BEHIND].user
    config = tmp_path / "ssh_config"
    config.write_text(
        f"Host coop-bastion\n    HostName 127.0.0.1\n    Port {bastion.ssh_port}\n"
        f"    User {user}\n    IdentityFile {key}\n\n"
        f"Host {BEHIND}-inside\n    HostName {behind.ip}\n    ProxyJump coop-bastion\n")
    monkeypatch.setenv("COOPHOST_SSH_CONFIG", str(config))
    known = tmp_path / "known_hosts"
    known.write_text(known_line(f"[127.0.0.1]:{bastion.ssh_port}", bastion.host_key)
                     + known_line(behind.ip, behind.host_key))
    entry = HostEntry(BEHIND, f"{BEHIND}-inside", 22, user, key, (),
                      {"ansible_host": f"{BEHIND}-inside", "ansible_user": user})
    return entry, known, {"bastion": bastion, "behind": behind}


def test_a_host_behind_a_bastion_is_reached_through_it_with_both_keys_pinned(
        lab: LabInfo, jump) -> None:  # type: ignore[no-untyped-def]
    entry, known, hosts = jump
    since = time.time() - 1
    check_host_key(entry, known)
    with connect(entry, known) as client:
        status, out = run(client, "hostname; echo $SSH_CONNECTION")
    assert status == 0
    name, connection = out.split("\n")[:2]
    assert name.startswith(BEHIND), out
    # h2 saw the connection come from h1's lab address: it went through the jump
    assert connection.split()[0] == hosts["bastion"].ip, connection  # type: ignore[attr-defined]
    assert logins(lab, BASTION, since), "the bastion logged no login"


def test_a_changed_key_on_either_hop_is_refused(lab: LabInfo, jump) -> None:  # type: ignore[no-untyped-def]
    entry, known, hosts = jump
    good = known.read_text()
    other = hosts["behind"].host_key  # type: ignore[attr-defined]
    bastion_name = f"[127.0.0.1]:{hosts['bastion'].ssh_port}"  # type: ignore[attr-defined]
    # the bastion pinned with h2's key: refused before any login to it
    known.write_text(known_line(bastion_name, other)
                     + known_line(hosts["behind"].ip, other))  # type: ignore[attr-defined]
    with pytest.raises(HostKeyMismatch, match="jump host"):
        check_host_key(entry, known)
    # h2 pinned under its lab address with h1's key: the bastion is fine, h2 is refused
    bastion_key = hosts["bastion"].host_key  # type: ignore[attr-defined]
    known.write_text(known_line(bastion_name, bastion_key)
                     + known_line(hosts["behind"].ip, bastion_key))  # type: ignore[attr-defined]
    with pytest.raises(HostKeyMismatch) as caught, connect(entry, known):
        pass
    assert "jump host" not in caught.value.message and BEHIND in caught.value.message
    known.write_text(good)


@pytest.fixture
def behind_bastion(lab: LabInfo, tmp_path: Path) -> tuple[Path, dict[str, str], LabHost]:
    """A copy of the co-op whose h2 is reached only through h1: hosts.yml names it by an alias
    that ~/.ssh/config routes by ProxyJump to h2's lab name, which only the lab's own DNS
    (asked by h1) resolves; the controller cannot reach it any other way."""
    state = lab_state(Lab(lab.name, lab.inventory))
    hosts = {h.name: h for h in state.hosts}
    bastion, behind = hosts[BASTION], hosts[BEHIND]
    copy = tmp_path / "coop"
    shutil.copytree(lab.inventory, copy, symlinks=True,
                    ignore=shutil.ignore_patterns("runs", "*.lock"))
    inventory = yaml.safe_load((copy / "hosts.yml").read_text())
    entry = inventory["all"]["hosts"][BEHIND]
    entry["ansible_host"] = f"{BEHIND}-inside"
    entry.pop("ansible_port", None)
    (copy / "hosts.yml").write_text(yaml.safe_dump(inventory, sort_keys=False))
    with (copy / "known_hosts").open("a") as known:
        known.write(known_line(behind.fqdn, behind.host_key))
    key = {e.name: e for e in load_hosts(lab.inventory)}[BEHIND].key_file
    config = tmp_path / "ssh_config"
    config.write_text(
        f"Host coop-bastion\n    HostName 127.0.0.1\n    Port {bastion.ssh_port}\n"
        f"    User coophost\n    IdentityFile {key}\n\n"
        f"Host {BEHIND}-inside\n    HostName {behind.fqdn}\n    ProxyJump coop-bastion\n")
    return copy, {"COOPHOST_SSH_CONFIG": str(config)}, bastion


def test_a_host_behind_a_bastion_is_checked_deployed_and_exported_through_it(
        lab: LabInfo, behind_bastion: tuple[Path, dict[str, str], LabHost],
        tmp_path: Path) -> None:
    copy, env, bastion = behind_bastion
    since = time.time() - 1
    checked = coophost("-i", str(copy), "host", "check", BEHIND, "--json", env=env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert json.loads(checked.stdout)[0]["host_key"] == "ok"
    # Ansible's OpenSSH, every play on h2 (mitogen's and plain ssh's), through the jump
    deployed = coophost("-i", str(copy), "deploy", "--all", "--host", BEHIND, "--json", env=env)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    assert json.loads(deployed.stdout)["hosts"][BEHIND]["status"] == "ok", deployed.stdout
    # a member's takeout, read from h2 through the jump
    member = member_on(copy, BEHIND)
    archive = tmp_path / "export.tar.gz"
    exported = coophost("-i", str(copy), "member", "export", member, "--out", str(archive),
                        env=env)
    assert exported.returncode == 0, exported.stdout + exported.stderr
    with tarfile.open(archive) as tar:
        assert any(f"/{BEHIND}/" in f"/{name}" for name in tar.getnames()), tar.getnames()
    # h2 saw every one of those logins come from the bastion, none straight from the controller
    accepted = [line for line in logins(lab, BEHIND, since)
                if line.startswith("Accepted publickey for ")]
    assert accepted, "h2 logged no login"
    assert all(f" from {bastion.ip} " in line for line in accepted), accepted
    assert logins(lab, BASTION, since), "the bastion logged no login"


def test_ansible_refuses_a_bastion_whose_key_changed(
        lab: LabInfo, behind_bastion: tuple[Path, dict[str, str], LabHost]) -> None:
    copy, env, bastion = behind_bastion
    known = copy / "known_hosts"
    other = next(h for h in lab_state(Lab(lab.name, lab.inventory)).hosts if h.name == "h3")
    lines = [line for line in known.read_text().splitlines()
             if not line.startswith(f"[127.0.0.1]:{bastion.ssh_port} ")]
    known.write_text("\n".join(lines) + "\n"
                     + known_line(f"[127.0.0.1]:{bastion.ssh_port}", other.host_key))
    time.sleep(1.1)  # the journal is asked by whole seconds: none of an earlier test's logins
    since = time.time()
    deployed = coophost("-i", str(copy), "deploy", "--all", "--host", BEHIND, "--json", env=env)
    assert deployed.returncode == 4, deployed.stdout + deployed.stderr
    assert not logins(lab, BASTION, since) and not logins(lab, BEHIND, since)


def member_on(inventory: Path, host: str) -> str:
    """An active member with a unit placed on `host`."""
    from coophost.registry.loader import load_registry

    members = load_registry(inventory).registry.members
    return next(slug for slug, m in sorted(members.items())
                if host in m.placement.values() and m.status == "active")
