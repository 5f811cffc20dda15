"""`coophost drift` on lab hosts: a host changed behind coophost's back is found, and only it."""

from __future__ import annotations

import json
import subprocess

import pytest

from coophost.lab.lab import Lab
from tests.integration.conftest import LabInfo

pytestmark = pytest.mark.lab

MARK = "# changed by hand, behind coophost"


def _drift(lab: LabInfo, *hosts: str) -> tuple[int, dict[str, dict[str, object]]]:
    args = [a for h in hosts for a in ("--host", h)]
    proc = lab.cli("drift", *args, "--json")
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    data = json.loads(proc.stdout)
    return proc.returncode, {h["host"]: h for h in data["hosts"]}


def test_drift_finds_a_hand_edited_host_and_a_deploy_all_repairs_it(lab: LabInfo):
    deployed = lab.cli("deploy", "--json")
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    plan = lab.cli("plan")
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "hosts were not contacted" in plan.stdout
    # (no drift run before the edit: the one after it finds the untouched h2 ok, and the last
    # one finds h1 ok again once repaired)
    container = Lab(lab.name, lab.inventory).container("h1")
    subprocess.run(["docker", "exec", container, "sh", "-c",
                    f"echo '{MARK}' >> /etc/ssh/sshd_config"],
                   check=True, capture_output=True)
    code, after = _drift(lab, "h1", "h2")
    assert code == 1, after
    assert after["h1"]["status"] == "drifted" and after["h1"]["changed"] >= 1, after
    assert after["h2"]["status"] == "ok", after
    # The registry did not change: a plain deploy has nothing to do, `--all` puts it back.
    repaired = lab.cli("deploy", "--all", "--host", "h1", "--json")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    text = subprocess.run(["docker", "exec", container, "cat",
                           "/etc/ssh/sshd_config"],
                          check=True, capture_output=True, text=True).stdout
    assert MARK not in text
    code, fixed = _drift(lab, "h1")
    assert code == 0 and fixed["h1"]["status"] == "ok", fixed
