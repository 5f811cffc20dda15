"""The lab on real Debian hosts: up, pinned keys, ansible-runner, host check, DNS, ACME, down."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import dns.resolver
import pytest

from coophost.deploy.runner import run_playbook
from coophost.errors import HostKeyMismatch
from coophost.layout import playbook
from coophost.registry.hosts import load_hosts
from coophost.ssh import connect, run
from tests.integration.conftest import LabInfo, coophost, docker_objects

pytestmark = pytest.mark.lab


def _container_ids(lab: LabInfo) -> list[str]:
    return sorted(docker_objects(f"coophost.lab={lab.name}")["containers"])


def test_up_writes_an_inventory_with_pinned_keys(lab: LabInfo) -> None:
    hosts = load_hosts(lab.inventory)
    # three service hosts and the backup host (group `backup` only)
    assert [h.name for h in hosts] == ["b1", "h1", "h2", "h3"]
    assert [h.name for h in hosts if "backup" in h.groups] == ["b1"]
    assert all("mail" in h.groups for h in hosts if h.name != "b1")
    assert all(h.address == "127.0.0.1" and h.port > 0 for h in hosts)
    pins = [line for line in (lab.inventory / "known_hosts").read_text().splitlines()
            if line.startswith("[127.0.0.1]:")]
    control = lab.status_state()["control_port"]
    assert sorted(int(p.split("]:")[1].split()[0]) for p in pins) == sorted(
        [h.port for h in hosts] + [control])  # the hosts and the control host
    assert all(p.split()[1] == "ssh-ed25519" for p in pins)
    # Every host (and the control host) has a key of its own: none shared through the image.
    assert len({p.split()[2] for p in pins}) == 5


def test_up_twice_gives_the_same_lab(lab: LabInfo) -> None:
    before = (_container_ids(lab), (lab.inventory / "hosts.yml").read_text(),
              (lab.inventory / "known_hosts").read_text())
    lab.cli("lab", "up", "--name", lab.name, check=True)
    after = (_container_ids(lab), (lab.inventory / "hosts.yml").read_text(),
             (lab.inventory / "known_hosts").read_text())
    assert before == after


def test_paramiko_connects_only_with_the_pinned_key(lab: LabInfo, tmp_path: Path) -> None:
    host = load_hosts(lab.inventory)[0]
    with connect(host, lab.inventory / "known_hosts") as client:
        status, out = run(client, "id -un")
    assert (status, out.strip()) == (0, "coophost")
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(HostKeyMismatch), connect(host, empty):
        pass
    assert empty.read_text() == "", "an unknown key must never be added"


def test_playbook_through_ansible_runner_converges_and_is_idempotent(lab: LabInfo) -> None:
    # The baseline play alone: the site playbook needs the co-op's rendered vars (deploy does).
    first = run_playbook(playbook("baseline.yml"), lab.inventory)
    assert first.ok, first
    assert first.hosts_with("ok") == ["b1", "h1", "h2", "h3"]
    second = run_playbook(playbook("baseline.yml"), lab.inventory)
    assert second.ok, second
    assert second.hosts_with("changed") == [], second.stats


def test_plain_ansible_reaches_every_host(lab: LabInfo) -> None:
    import sys
    ansible = Path(sys.executable).parent / "ansible"
    proc = subprocess.run([str(ansible), "-i", str(lab.inventory / "hosts.yml"), "all",
                           "-m", "ansible.builtin.ping"], capture_output=True, text=True,
                          check=False, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("SUCCESS") == 4


def test_host_check_reports_both_hosts(lab: LabInfo) -> None:
    proc = lab.cli("host", "check", "--json")
    assert proc.returncode == 0, proc.stderr
    reports = json.loads(proc.stdout)
    assert [r["host"] for r in reports] == ["b1", "h1", "h2", "h3"]
    for report in reports:
        assert report["ok"] and report["host_key"] == "ok"
        assert report["os"].startswith("debian 12")
        assert report["python"].startswith("3.")
        assert report["privilege"] == "sudo"
        assert report["disk_free_gb"] > 0 and report["mem_total_mb"] > 0


def test_changed_host_key_is_refused_with_exit_4(lab: LabInfo) -> None:
    container = f"coophost-{lab.name}-h2"
    key = "/etc/ssh/ssh_host_ed25519_key"

    def sh(*argv: str) -> None:
        subprocess.run(["docker", "exec", container, *argv], check=True, capture_output=True)

    sh("cp", "-p", key, f"{key}.orig")
    sh("cp", "-p", f"{key}.pub", f"{key}.pub.orig")
    try:
        sh("rm", "-f", key, f"{key}.pub")
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key)
        sh("systemctl", "restart", "ssh")
        proc = lab.cli("host", "check", "h2")
        assert proc.returncode == 4, proc.stdout + proc.stderr
        assert "host key mismatch" in proc.stderr
        assert "h1" not in proc.stdout  # only the host asked for was checked
    finally:
        sh("mv", f"{key}.orig", key)
        sh("mv", f"{key}.pub.orig", f"{key}.pub")
        sh("systemctl", "restart", "ssh")
    assert lab.cli("host", "check", "h2").returncode == 0


def test_lab_dns_answers_for_lab_names(lab: LabInfo) -> None:
    state = json.loads((lab.inventory / ".coophost/lab/lab.json").read_text())
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = state["dns_port"]
    for host in state["hosts"]:
        answer = resolver.resolve(host["fqdn"], "A")
        assert [a.address for a in answer] == [host["ip"]]
    # The hosts resolve each other's names through it too.
    proc = lab.cli("lab", "ssh", "--name", lab.name, "h1", "--", "getent", "hosts",
                   f"h2.{lab.name}.test")
    assert proc.returncode == 0 and state["hosts"][1]["ip"] in proc.stdout


def test_lab_acme_ca_is_served_over_tls_the_hosts_trust(lab: LabInfo) -> None:
    script = ("import json, urllib.request; "
              f"d = json.load(urllib.request.urlopen('https://acme.{lab.name}.test:14000/dir')); "
              "print(sorted(d))")
    proc = lab.cli("lab", "ssh", "--name", lab.name, "h1", "--", "python3", "-c",
                   json.dumps(script))
    assert proc.returncode == 0, proc.stderr
    assert "newOrder" in proc.stdout and "newAccount" in proc.stdout


def test_lab_ssh_runs_a_command(lab: LabInfo) -> None:
    proc = lab.cli("lab", "ssh", "--name", lab.name, "h2", "--", "hostname", "-f")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"h2.{lab.name}.test"


def test_status_json_lists_hosts_and_services(lab: LabInfo) -> None:
    status = lab.status()
    roles = sorted(c["role"] for c in status["containers"])  # type: ignore[index, union-attr]
    assert roles == ["acme", "b1", "control", "dns", "h1", "h2", "h3"]
    assert all(c["state"] == "running" for c in status["containers"])  # type: ignore[union-attr]


def test_second_lab_coexists_and_down_removes_only_its_own(lab: LabInfo, tmp_path: Path) -> None:
    other = f"{lab.name}b"
    inventory = tmp_path / other
    keep = inventory / "coop.yml"
    inventory.mkdir()
    keep.write_text("name: not the lab's\n")
    coophost("-i", str(inventory), "lab", "up", "--name", other, "--hosts", "1",
             "--backup-hosts", "0", check=True)
    assert len(docker_objects(f"coophost.lab={other}")["containers"]) == 4  # + dns, acme, control
    mine_before = _container_ids(lab)
    coophost("-i", str(inventory), "lab", "down", "--name", other, check=True)
    assert docker_objects(f"coophost.lab={other}") == {
        "containers": [], "networks": [], "volumes": []}
    assert _container_ids(lab) == mine_before, "down touched another lab"
    assert keep.read_text() == "name: not the lab's\n"
    assert sorted(p.name for p in inventory.iterdir()) == ["coop.yml"]
