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
