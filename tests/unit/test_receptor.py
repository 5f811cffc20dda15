"""The Receptor transport: hosts.yml fields, the PKI, the node configs, the units record."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from coophost.deploy.receptor import (
    CONTROLLER_NODE,
    TLS_NAME,
    WORKTYPE,
    Pki,
    controller_config,
    ensure_pki,
    exit_status,
    job_params,
    san_args,
    worker_config,
)
from coophost.deploy.remote import forget_unit, record_unit, recorded_units
from coophost.errors import ValidationError
from coophost.registry.catalogue import load_catalogue
from coophost.registry.parse import parse_hosts, parse_workers
from tests.unit.test_workers import inventory

HAS_RECEPTOR = shutil.which("receptor") is not None


def test_a_worker_is_ssh_unless_it_says_receptor() -> None:
    catalogue = load_catalogue()
    [plain] = parse_workers(inventory({"coophost_worker_serves": ["h1"]}), "hosts.yml",
                            catalogue)
    assert (plain.transport, plain.receptor_port) == ("ssh", 27199)
    [mesh] = parse_workers(inventory({"coophost_worker_serves": ["h1"],
                                      "coophost_worker_transport": "receptor",
                                      "coophost_worker_receptor_port": 27200}),
                           "hosts.yml", catalogue)
    assert (mesh.transport, mesh.receptor_port) == ("receptor", 27200)


@pytest.mark.parametrize(("worker_vars", "field", "words"), [
    ({"coophost_worker_transport": "http"}, "hosts.w1.coophost_worker_transport",
     "must be one of ssh, receptor"),
    ({"coophost_worker_transport": ["receptor"]}, "hosts.w1.coophost_worker_transport",
     "must be one of"),
    ({"coophost_worker_receptor_port": 0}, "hosts.w1.coophost_worker_receptor_port",
     "at least 1"),
    ({"coophost_worker_receptor_port": "27199"}, "hosts.w1.coophost_worker_receptor_port",
     "integer"),
])
def test_bad_transport_fields_exit_2_naming_file_field_value(
        worker_vars: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_hosts(inventory({"coophost_worker_serves": ["h1"], **worker_vars}), "hosts.yml",
                    load_catalogue())
    assert any(p.file == "hosts.yml" and p.field == field and words in p.problem
               for p in caught.value.errors), [str(p) for p in caught.value.errors]
    assert caught.value.exit_code == 2


def test_the_worker_node_listens_only_with_tls_and_runs_signed_work_only() -> None:
    config = worker_config("w1", port=27199, bind="0.0.0.0", tls_dir="/etc/receptor/tls",
                           datadir="/d", socket_path="/run/receptor/receptor.sock",
                           command="/usr/local/lib/coophost-worker/command",
                           signing_public="/etc/receptor/tls/work-signing.pub")
    kinds = [next(iter(item)) for item in config]
    assert "tcp-listener" in kinds and kinds.count("tcp-listener") == 1
    assert not {"udp-listener", "ws-listener", "tcp-peer"} & set(kinds)
    listener = config[kinds.index("tcp-listener")]["tcp-listener"]
    server = config[kinds.index("tls-server")]["tls-server"]
    assert listener["tls"] == server["name"] == TLS_NAME
    assert server["requireclientcert"] is True and server["clientcas"].endswith("ca.crt")
    [work] = [item["work-command"] for item in config if "work-command" in item]
    assert work == {"worktype": WORKTYPE, "command": "/usr/local/lib/coophost-worker/command",
                    "allowruntimeparams": True, "verifysignature": True}
    assert "work-verification" in kinds


def test_the_role_template_writes_the_same_worker_config() -> None:
    import json

    import jinja2
    from ansible.plugins.filter.core import to_nice_json

    root = Path(__file__).resolve().parents[2]
    source = root / "roles/worker/templates/receptor.conf.j2"
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    env.filters["to_nice_json"] = to_nice_json
    text = env.from_string(source.read_text()).render(
        worker_receptor_node_id="w1", worker_receptor_datadir="/d",
        worker_receptor_port="27199", worker_receptor_bind_address="0.0.0.0",
        worker_receptor_socket="/run/receptor/receptor.sock",
        worker_command="/usr/local/lib/coophost-worker/command")
    assert json.loads(text) == worker_config(
        "w1", port=27199, bind="0.0.0.0", tls_dir="/etc/receptor/tls", datadir="/d",
        socket_path="/run/receptor/receptor.sock",
        command="/usr/local/lib/coophost-worker/command",
        signing_public="/etc/receptor/tls/work-signing.pub")


def test_the_controller_node_dials_each_worker_with_tls_and_signs(tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    config = controller_config(pki, [("10.0.0.5", 27199), ("w2.example.org", 27200),
                                     ("10.0.0.5", 27199)], tmp_path / "data", tmp_path / "s")
    peers = [item["tcp-peer"] for item in config if "tcp-peer" in item]
    assert [p["address"] for p in peers] == ["10.0.0.5:27199", "w2.example.org:27200"]
    assert all(p["tls"] == TLS_NAME for p in peers)
    client = next(item["tls-client"] for item in config if "tls-client" in item)
    assert client["rootcas"] == str(pki.ca_cert) and "insecureskipverify" not in client
    assert next(item["work-signing"] for item in config
                if "work-signing" in item)["privatekey"] == str(pki.signing_key)
    assert not any("tcp-listener" in item for item in config)  # the controller listens nowhere


def test_job_params_are_the_forced_commands_job_line() -> None:
    line = job_params("/var/lib/coophost-worker/jobs", "0123456789abcdef", 5)
    assert line == ("ansible-runner worker --delete --keepalive-seconds 5 --private-data-dir "
                    "/var/lib/coophost-worker/jobs/0123456789abcdef")
    with pytest.raises(ValueError):
        job_params("/j", "../../etc", 5)


def test_san_args_name_an_address_or_a_dns_name() -> None:
    assert san_args("10.1.0.5") == ["ipaddress=10.1.0.5"]
    assert san_args("::1") == ["ipaddress=::1"]
    assert san_args("w1.example.org") == ["dnsname=w1.example.org"]


def test_exit_status_is_read_from_the_units_detail() -> None:
    assert exit_status({"Detail": "exit status 0", "State": 2}) == 0
    assert exit_status({"Detail": "exit status 126", "State": 3}) == 126
    assert exit_status({"Detail": "Running: PID 12"}) is None


def test_units_are_recorded_until_forgotten(tmp_path: Path) -> None:
    record_unit(tmp_path, "0123456789abcdef", "w1", "coophost-controllerAbC", ("h1", "h2"))
    assert recorded_units(tmp_path) == [{"job": "0123456789abcdef", "worker": "w1",
                                         "unit": "coophost-controllerAbC",
                                         "hosts": ["h1", "h2"], "run_id": None, "applied": {}}]
    record = next((tmp_path / ".coophost/receptor/units").iterdir())
    assert record.stat().st_mode & 0o777 == 0o600
    forget_unit(tmp_path, "0123456789abcdef")
    assert recorded_units(tmp_path) == []


def test_a_unit_record_carries_its_run_and_each_hosts_job(tmp_path: Path) -> None:
    """What `workers reattach` needs to record the hosts as the deploy would have."""
    from coophost.deploy.jobs import HostJob, RunContext, job_from_record

    job = HostJob("h1", [("alice", "mail", "u1"), ("bob", "git", "u2")], "hh",
                  settings={("alice", "mail"): "f1", ("bob", "git"): "f2"}, level="lv",
                  path="fast")
    context = RunContext(7, {"h1": job, "h2": HostJob("h2")})
    record_unit(tmp_path, "feed", "w1", "unit", ("h1",), context.for_hosts(["h1"]))
    [found] = recorded_units(tmp_path)
    assert found["run_id"] == 7 and set(found["applied"]) == {"h1"}
    back = job_from_record("h1", found["applied"]["h1"])
    assert (back.units, back.host_hash, back.settings, back.level, back.path) == (
        job.units, job.host_hash, job.settings, job.level, job.path)
    with pytest.raises(ValueError, match="not a host job record"):
        job_from_record("h1", {"units": [["only-two", "fields"]]})


@pytest.mark.skipif(not HAS_RECEPTOR, reason="receptor is not installed (scripts/setup-host)")
def test_the_pki_is_made_once_with_private_keys_0600(tmp_path: Path) -> None:
    folder = tmp_path / "pki"
    pki = ensure_pki(folder, [(CONTROLLER_NODE, ""), ("w1", "10.1.0.5")])
    for key in (pki.ca_key, pki.signing_key, pki.node_key("w1"), pki.node_key(CONTROLLER_NODE)):
        assert key.stat().st_mode & 0o777 == 0o600, key
    assert folder.stat().st_mode & 0o777 == 0o700
    text = subprocess.run(["openssl", "x509", "-noout", "-text", "-in", str(pki.node_cert("w1"))],
                          capture_output=True, text=True, check=True).stdout
    assert "1.3.6.1.4.1.2312.19.1" in text and "w1" in text and "10.1.0.5" in text
    verified = subprocess.run(["openssl", "verify", "-CAfile", str(pki.ca_cert),
                               str(pki.node_cert("w1"))], capture_output=True, text=True,
                              check=False)
    assert verified.returncode == 0, verified.stderr
    before = pki.ca_cert.read_bytes(), pki.node_cert("w1").read_bytes()
    ensure_pki(folder, [(CONTROLLER_NODE, ""), ("w1", "10.1.0.5"), ("w2", "w2.example.org")])
    assert (pki.ca_cert.read_bytes(), pki.node_cert("w1").read_bytes()) == before
    assert pki.node_cert("w2").is_file() and not list(folder.glob("nodes/*.csr"))


def test_workers_list_says_the_transport_and_reattach_with_nothing_left_exits_0(
        coop: Path, cli: Any) -> None:
    hosts = coop / "hosts.yml"
    hosts.write_text(hosts.read_text() + "    coophost_workers:\n      hosts:\n        w1:\n"
                     "          ansible_host: 10.1.0.5\n"
                     "          coophost_worker_serves: [h1]\n"
                     "          coophost_worker_transport: receptor\n")
    code, out, err = cli("-i", str(coop), "workers", "list", "--json")
    assert code == 0, err
    assert [(w["name"], w["transport"]) for w in json.loads(out)] == [("w1", "receptor")]
    code, out, err = cli("-i", str(coop), "workers", "reattach")
    assert code == 0, err
    assert "No receptor work unit left" in out


def test_a_bad_transport_in_hosts_yml_exits_2_before_anything(coop: Path, cli: Any) -> None:
    hosts = coop / "hosts.yml"
    hosts.write_text(hosts.read_text() + "    coophost_workers:\n      hosts:\n        w1:\n"
                     "          coophost_worker_serves: [h1]\n"
                     "          coophost_worker_transport: telnet\n")
    code, _out, err = cli("-i", str(coop), "workers", "list")
    assert code == 2
    assert "hosts.yml" in err and "coophost_worker_transport" in err and "telnet" in err
