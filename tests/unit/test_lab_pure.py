"""Pure parts of the lab and of SSH preflight: mirror discovery, recipe, tar, parsing."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from coophost.errors import EnvironmentProblem, UsageError
from coophost.lab import image
from coophost.lab.lab import _tar, check_name
from coophost.ssh import HostReport, fill_report, parse_preflight


@pytest.mark.parametrize(("files", "expected"), [
    ({"sources.list": "deb http://mirror.invalid/debian bookworm main\n"},
     "http://mirror.invalid/debian"),
    ({"sources.list": "# deb http://x.invalid/debian bookworm main\n"
                      "deb [arch=amd64] https://y.invalid/debian/ bookworm main contrib\n"},
     "https://y.invalid/debian"),
    ({"sources.list.d/debian.sources":
      "Types: deb\nURIs: http://sec.invalid/debian-security\nSuites: bookworm-security\n"
      "Components: main\n\nTypes: deb\nURIs: http://m.invalid/debian\n"
      "Suites: bookworm bookworm-updates\nComponents: main\n"},
     "http://m.invalid/debian"),
    ({"sources.list.d/other.sources":
      "Types: deb\nURIs: http://off.invalid/debian\nSuites: bookworm\nComponents: main\n"
      "Enabled: no\n"}, None),
    ({"sources.list": "deb-src http://src.invalid/debian bookworm main\n"}, None),
])
def test_mirror_from_apt_sources(tmp_path: Path, files: dict[str, str],
                                 expected: str | None) -> None:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert image.mirror_from_apt_sources(tmp_path) == expected


def test_explicit_mirror_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(image.MIRROR_ENV, "http://env.invalid/debian")
    assert image.resolve_mirror("http://flag.invalid/debian") == "http://flag.invalid/debian"
    assert image.resolve_mirror(None) == "http://env.invalid/debian"


def test_no_mirror_anywhere_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(image.MIRROR_ENV, raising=False)
    monkeypatch.setattr(image, "mirror_from_apt_sources", lambda: None)
    with pytest.raises(EnvironmentProblem, match="which Debian mirror"):
        image.resolve_mirror(None)


def test_recipe_hash_is_stable_and_changes_with_the_recipe() -> None:
    assert image.Recipe().digest() == image.Recipe().digest()
    assert image.Recipe().digest() != image.Recipe(packages=("systemd",)).digest()
    assert image.Recipe().base_tag.startswith("coophost-lab:base-")


@pytest.mark.parametrize("name", ["lab", "t", "it-42", "a" * 21])
def test_good_lab_names(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", "Lab", "1lab", "../x", "a b", "a;rm", "a" * 22, "lab_1"])
def test_bad_lab_names(name: str) -> None:
    with pytest.raises(UsageError):
        check_name(name)


def test_tar_sets_modes_and_owners() -> None:
    data = _tar({"etc/ssh/key": (b"secret", 0o600, 0),
                 "home/u/.ssh/authorized_keys": (b"k", 0o600, 1000)})
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert members["etc/ssh/key"].mode == 0o600 and members["etc/ssh/key"].uid == 0
    assert members["home/u/.ssh"].mode == 0o700 and members["home/u/.ssh"].uid == 1000
    assert members["home/u/.ssh/authorized_keys"].uid == 1000


PREFLIGHT_OUTPUT = """@@os
PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
ID=debian
VERSION_ID="12"
VERSION_CODENAME=bookworm
@@python
3.11.2
@@user
coophost
@@sudo
sudo
@@disk
/dev/vda 263174212 180000000 83174212 69% /
@@mem
MemTotal:       24576000 kB
MemAvailable:   20480000 kB
"""


def test_preflight_output_is_parsed() -> None:
    report = fill_report(HostReport("h1", "127.0.0.1:22", reachable=True, host_key="ok"),
                         parse_preflight(PREFLIGHT_OUTPUT))
    assert report.os == "debian 12 (bookworm)"
    assert (report.python, report.user, report.privilege) == ("3.11.2", "coophost", "sudo")
    assert report.disk_free_gb == pytest.approx(79.3, abs=0.1)
    assert (report.mem_total_mb, report.mem_available_mb) == (24000, 20000)
    assert report.ok


def test_preflight_without_python_or_sudo_is_not_ok() -> None:
    text = PREFLIGHT_OUTPUT.replace("3.11.2", "").replace("@@sudo\nsudo", "@@sudo\nnone")
    report = fill_report(HostReport("h1", "x", reachable=True, host_key="ok"),
                         parse_preflight(text))
    assert not report.ok


def test_a_host_made_anew_loses_its_applied_record(tmp_path: Path) -> None:
    from coophost.lab.lab import Lab
    from coophost.state import StateDB

    with StateDB(tmp_path) as db:
        for host in ("h1", "h2"):
            db.record_host_applied(host, f"hash-{host}", [("ada", "mail", "u1")])
    Lab("t", tmp_path)._forget_applied(["h2"])
    with StateDB(tmp_path) as db:
        applied = db.applied()
    assert applied.hosts == {"h1": "hash-h1"}
    assert set(applied.units) == {("h1", "ada", "mail")}


def test_forgetting_without_a_state_db_writes_nothing(tmp_path: Path) -> None:
    from coophost.lab.lab import Lab

    Lab("t", tmp_path)._forget_applied(["h1"])
    assert not any(tmp_path.iterdir())


def test_lab_member_keys_registered_on_up_and_removed_on_down(coop: Path, tmp_path: Path) -> None:
    """lab up registers one key per git member; lab down takes exactly that key back out."""
    from coophost.lab.memberkeys import ensure_member_keys, forget_member_keys, key_path
    from coophost.registry.loader import load_registry

    workdir = tmp_path / "labwork"
    record = coop / "members" / "cycle-works.yml"
    before = record.read_text()
    own = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGld4HyORXSmfnIYueDMq/76OArznQnuwnvGSeXCP9Z5 own"
    from coophost.lock import coop_lock
    from coophost.registry import edit

    with coop_lock(coop, purpose="test"):
        edit.edit_fields(coop, load_registry(coop, need_hosts=False), "cycle-works",
                         add_keys=(own,))
    assert ensure_member_keys(workdir, coop) == ["cycle-works"]
    assert ensure_member_keys(workdir, coop) == []  # idempotent
    lab_pub = key_path(workdir, "cycle-works").with_suffix(".pub").read_text().strip()
    keys = load_registry(coop, need_hosts=False).registry.members["cycle-works"].ssh_keys
    assert lab_pub in keys and own in keys
    assert not key_path(workdir, "ada-books").exists()  # no git: no key
    assert forget_member_keys(workdir, coop) == ["cycle-works"]
    keys = load_registry(coop, need_hosts=False).registry.members["cycle-works"].ssh_keys
    assert list(keys) == [own]
    assert record.read_text() != before  # the member's own key stayed


def test_lab_workers_are_written_as_valid_workers_serving_every_host(tmp_path: Path) -> None:
    from coophost.lab.lab import Lab, LabHost, LabState
    from coophost.registry.loader import load_hosts, load_workers

    lab = Lab("wkt", tmp_path / "wkt")
    state = LabState("wkt", "coophost-wkt", "wkt.test", dns_ip="10.9.0.2")
    for index, name in enumerate(["h1", "h2", "b1", "w1", "w2"]):
        ip = "" if name.startswith("w") else f"10.9.0.{10 + index}"
        state.hosts.append(LabHost(name, f"coophost-wkt-{name}", f"{name}.wkt.test",
                                   40000 + index, ip, "ssh-ed25519 AAAA"))
    lab._write_inventory(state)
    assert sorted(load_hosts(lab.inventory)) == ["b1", "h1", "h2"]
    found = load_workers(lab.inventory)
    assert [(w.name, w.serves, w.capacity, w.connection.port) for w in found] == [
        ("w1", ("h1", "h2", "b1"), 2, 40003), ("w2", ("h1", "h2", "b1"), 2, 40004)]
    assert "[127.0.0.1]:40003 ssh-ed25519 AAAA" in (lab.inventory / "known_hosts").read_text()


def test_lab_receptor_workers_listen_on_127_0_0_1_with_their_own_ports(tmp_path: Path) -> None:
    """They share the controller's network: their own ports, the loopback only, no NET_ADMIN."""
    import yaml

    from coophost.lab.lab import SYSTEMD_FLAGS, WORKER_SYSTEMD_FLAGS, Lab, LabHost, LabState
    from coophost.registry.loader import load_workers

    lab = Lab("wkr", tmp_path / "wkr")
    state = LabState("wkr", "coophost-wkr", "wkr.test", dns_ip="10.9.0.2")
    state.hosts.append(LabHost("h1", "coophost-wkr-h1", "h1.wkr.test", 40000, "10.9.0.10",
                               "ssh-ed25519 AAAA"))
    for index, name in enumerate(["w1", "w2"], start=1):
        state.hosts.append(LabHost(name, f"coophost-wkr-{name}", f"{name}.wkr.test",
                                   40000 + index, "", "ssh-ed25519 AAAA",
                                   transport="receptor", receptor_port=41000 + index))
    lab._write_inventory(state)
    found = load_workers(lab.inventory)
    assert [(w.name, w.transport, w.receptor_port) for w in found] == [
        ("w1", "receptor", 41001), ("w2", "receptor", 41002)]
    hosts = yaml.safe_load((lab.inventory / "hosts.yml").read_text())
    workers = hosts["all"]["children"]["coophost_workers"]["hosts"]
    assert {w["worker_receptor_bind_address"] for w in workers.values()} == {"127.0.0.1"}
    assert "NET_ADMIN" in SYSTEMD_FLAGS and "NET_ADMIN" not in WORKER_SYSTEMD_FLAGS
    assert "SYS_ADMIN" in WORKER_SYSTEMD_FLAGS and "--cgroupns=host" in WORKER_SYSTEMD_FLAGS
    # a state file from before these fields reads back as ssh workers
    data = json.loads(state.to_json())
    for host in data["hosts"]:
        del host["transport"], host["receptor_port"]
    assert {h.transport for h in LabState.from_json(json.dumps(data)).hosts} == {"ssh"}


def test_image_builds_wait_for_each_other(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Two ensure_images on one machine (a lab and molecule side by side) build one at a
    time: while one holds the build lock, another process cannot take it."""
    import subprocess
    import sys

    monkeypatch.setattr(image.tempfile, "tempdir", str(tmp_path))
    probe = ("import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR)\n"
             "try:\n fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB); print('free')\n"
             "except BlockingIOError:\n print('held')\n")
    lock = str(tmp_path / "coophost-lab-image.lock")
    with image.build_lock():
        held = subprocess.run([sys.executable, "-c", probe, lock], capture_output=True,
                              text=True, check=True).stdout.strip()
    after = subprocess.run([sys.executable, "-c", probe, lock], capture_output=True,
                           text=True, check=True).stdout.strip()
    assert (held, after) == ("held", "free")
