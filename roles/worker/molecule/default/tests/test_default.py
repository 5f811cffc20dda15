"""The execution node, checked on the converged host."""

import json
from importlib.metadata import version

import pytest

COMMAND = "/usr/local/lib/coophost-worker/command"


def forced(host, original):
    """Run the forced command as sshd would, for the worker account."""
    return host.run(f"sudo -u coophost-worker env SSH_ORIGINAL_COMMAND='{original}' {COMMAND}")


def test_the_venv_has_exactly_the_controllers_versions(host):
    result = forced(host, "coophost-worker versions")
    assert result.rc == 0, result.stderr
    found = json.loads(result.stdout)
    for name in ("ansible-core", "ansible-runner", "mitogen"):
        assert found[name] == version(name)


def test_the_key_runs_only_the_forced_command(host):
    keys = host.file("/var/lib/coophost-worker/.ssh/authorized_keys")
    assert keys.user == "coophost-worker" and keys.mode == 0o600
    lines = [ln for ln in keys.content_string.splitlines() if ln and not ln.startswith("#")]
    assert lines == [f'restrict,command="{COMMAND}" ssh-ed25519 '
                     "AAAAC3NzaC1lZDI1NTE5AAAAIKsrj4IPMuOXi8Z5hNIk3PljG0h8ElFC4GMnrP8VRqZu "
                     "controller@molecule.test"]
    command = host.file(COMMAND)
    assert command.user == "root" and command.mode == 0o755


@pytest.mark.parametrize("original", [
    "sh", "id", "ansible-runner worker", "ansible-runner worker --delete --private-data-dir /etc",
    "ansible-runner worker --delete --private-data-dir /var/lib/coophost-worker/jobs/../x",
])
def test_anything_else_is_refused(host, original):
    result = forced(host, original)
    assert result.rc == 126
    assert "refused" in result.stderr


def test_worker_info_answers(host):
    result = forced(host, "ansible-runner worker --worker-info")
    assert result.rc == 0, result.stderr
    assert "runner_version" in result.stdout


def test_job_folders_belong_to_the_worker_alone(host):
    jobs = host.file("/var/lib/coophost-worker/jobs")
    assert jobs.is_directory and jobs.user == "coophost-worker" and jobs.mode == 0o700
    assert host.file("/opt/coophost-worker/venv").user == "root"


# -- receptor (worker_transport: receptor) ------------------------------------------------------
CLIENT = "/root/mesh-test"
CLIENT_SOCKET = f"{CLIENT}/control.sock"
SUBMIT = """
import io, json, sys
from receptorctl.socket_interface import ReceptorControl
node, sign = sys.argv[1], sys.argv[2] == "signed"
try:
    unit = ReceptorControl(sys.argv[3]).submit_work(
        "coophost-job", io.BytesIO(b"not a job"), node=node, signwork=sign,
        params={"params": "ansible-runner worker --delete --private-data-dir /nowhere/x"})
    print(json.dumps({"unit": unit["unitid"]}))
except RuntimeError as exc:
    print(json.dumps({"error": str(exc)}))
"""


@pytest.fixture(scope="module")
def client_node(host):
    """A controller node (the co-op CA's certificate, the signing key) dialing 127.0.0.1."""
    name = host.backend.get_hostname()
    config = [
        {"node": {"id": "coophost-controller", "datadir": f"{CLIENT}/data"}},
        {"tls-client": {"name": "mesh", "cert": f"{CLIENT}/coophost-controller.crt",
                        "key": f"{CLIENT}/coophost-controller.key",
                        "rootcas": f"{CLIENT}/ca.crt", "mintls13": True}},
        {"tcp-peer": {"address": "127.0.0.1:27199", "tls": "mesh", "redial": True}},
        {"control-service": {"service": "control", "filename": CLIENT_SOCKET}},
        {"work-signing": {"privatekey": f"{CLIENT}/work-signing.key",
                          "tokenexpiration": "1h"}},
    ]
    host.run(f"cat > {CLIENT}/client.json <<'EOF'\n{json.dumps(config)}\nEOF")
    started = host.run("systemd-run --unit mesh-test-client receptor "
                       f"--config {CLIENT}/client.json")
    assert started.rc == 0, started.stderr
    routed = host.run(f"for i in $(seq 60); do receptorctl --socket {CLIENT_SOCKET} status "
                      f"2>/dev/null | grep -q '^{name} ' && exit 0; sleep 0.5; done; exit 1")
    yield name
    host.run("systemctl stop mesh-test-client")
    assert routed.rc == 0, host.run("journalctl -u mesh-test-client --no-pager").stdout


def submit(host, node, how):
    result = host.run(f"python3 -c '{SUBMIT}' {node} {how} {CLIENT_SOCKET}")
    assert result.rc == 0, result.stderr
    return json.loads(result.stdout)


def test_receptor_listens_only_with_tls_on_its_port(host):
    listening = host.run("ss -ltnH").stdout
    ports = {line.split()[3].rsplit(":", 1)[1] for line in listening.splitlines()}
    assert "27199" in ports
    assert "7323" not in ports  # the packaged config's plain TCP listener
    config = json.loads(host.file("/etc/receptor/receptor.conf").content_string)
    listener = next(item["tcp-listener"] for item in config if "tcp-listener" in item)
    assert listener["tls"] == "coophost-mesh"
    server = next(item["tls-server"] for item in config if "tls-server" in item)
    assert server["requireclientcert"] is True


def test_receptor_never_ran_with_the_packaged_config(host):
    # The packaged config's control socket is /tmp/receptor.sock and its listener port 7323:
    # neither ever appeared in the service's log, and the service started once per config.
    log = host.run("journalctl -u receptor --no-pager -o cat").stdout
    assert "7323" not in log and "/tmp/receptor.sock" not in log
    assert "Initialization complete" in log


def test_receptor_runs_as_the_worker_account_with_private_keys(host):
    assert host.run("systemctl show -p User --value receptor").stdout.strip() == "coophost-worker"
    key = host.file("/etc/receptor/tls/node.key")
    assert key.user == "coophost-worker" and key.mode == 0o600
    assert not host.file("/etc/receptor/tls/ca.key").exists


def test_unsigned_work_is_refused_and_signed_work_runs(host, client_node):
    refused = submit(host, client_node, "unsigned")
    assert "could not verify signature" in refused.get("error", ""), refused
    accepted = submit(host, client_node, "signed")
    assert accepted.get("unit"), accepted
    # The forced command refuses the job folder (not under the jobs folder): it ran, as the
    # worker account, and said so.
    unit = accepted["unit"]
    status = host.run(f"for i in $(seq 60); do receptorctl --socket {CLIENT_SOCKET} work status "
                      f"{unit} | grep -q '\"State\": [234]' && break; sleep 0.5; done; "
                      f"receptorctl --socket {CLIENT_SOCKET} work results {unit}; "
                      f"receptorctl --socket {CLIENT_SOCKET} work status {unit}")
    said = status.stdout + status.stderr
    assert "coophost-worker: refused" in said and "exit status 126" in said, said
