"""Molecule's lab platform is defined once, in .config/molecule/config.yml.

Molecule merges each scenario's molecule.yml over that base config: dicts deeply, lists
replaced whole. The docker driver's create playbook gets the lab flags (systemd as PID 1
without --privileged) through a localhost host var that lays every scenario platform over
`coophost_lab_platform`. These tests keep copies of the shared settings out of the scenarios.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / ".config" / "molecule" / "config.yml"
SCENARIOS = sorted([*ROOT.glob("roles/*/molecule/*/molecule.yml"),
                    *ROOT.glob("services/*/molecule/*/molecule.yml")])
TAG = "${COOPHOST_MOLECULE_TAG:-mol}"

# The flags that make systemd run as PID 1 in a lab container here (docs: DESIGN.md, the lab).
LAB_FLAGS = {
    "pre_build_image": True,
    "command": "/lib/systemd/systemd",
    "capabilities": ["SYS_ADMIN", "NET_ADMIN"],
    "cgroupns_mode": "host",
    "volumes": ["/sys/fs/cgroup:/sys/fs/cgroup:rw"],
    "tmpfs": ["/run", "/run/lock", "/tmp"],
    "security_opts": ["seccomp=unconfined", "apparmor=unconfined"],
}
# What a scenario's platform may say: which instance it is, and its image when not the base one.
PLATFORM_KEYS = {"name", "hostname", "image", "networks", "groups", "children"}


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def base() -> dict:
    return load(BASE)


def template() -> dict:
    return base()["provisioner"]["inventory"]["host_vars"]["localhost"]["coophost_lab_platform"]


def leaf_paths(data: object, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    if isinstance(data, dict) and data:
        return set().union(*(leaf_paths(value, (*prefix, key)) for key, value in data.items()))
    return {prefix}


def scenario_id(path: Path) -> str:
    return str(path.relative_to(ROOT).parent)


def test_there_are_scenarios() -> None:
    assert len(SCENARIOS) >= 4


def test_the_base_config_holds_driver_lab_platform_provisioner_and_verifier() -> None:
    config = base()
    assert config["driver"] == {"name": "docker"}
    assert config["verifier"]["name"] == "testinfra"
    assert config["provisioner"]["name"] == "ansible"
    defaults = config["provisioner"]["config_options"]["defaults"]
    assert defaults["interpreter_python"] == "/usr/bin/python3"
    assert "roles" in config["provisioner"]["env"]["ANSIBLE_ROLES_PATH"]
    assert {key: template()[key] for key in LAB_FLAGS} == LAB_FLAGS
    assert template()["image"] == "${COOPHOST_MOLECULE_BASE_IMAGE:-coophost-lab:base}"
    assert "privileged" not in template()  # --privileged fails on these machines
    assert "platforms" not in config  # a scenario's list would replace it, flags and all


def test_the_driver_reads_every_platform_over_the_template() -> None:
    localhost = base()["provisioner"]["inventory"]["host_vars"]["localhost"]
    expression = " ".join(localhost["molecule_yml"].split())
    assert "[coophost_lab_platform] | product(coophost_scenario_yml.platforms) | map('combine')" \
        in expression
    assert localhost["coophost_scenario_yml"] == "{{ lookup('file', molecule_file) | from_yaml }}"


@pytest.mark.parametrize("path", SCENARIOS, ids=scenario_id)
def test_a_scenario_repeats_nothing_of_the_base_config(path: Path) -> None:
    scenario = load(path)
    repeated = leaf_paths(base()) & leaf_paths(scenario)
    assert not repeated, f"{path.relative_to(ROOT)} sets what the base config sets: {repeated}"
    assert not {"driver", "verifier", "dependency"} & set(scenario)


@pytest.mark.parametrize("path", SCENARIOS, ids=scenario_id)
def test_a_scenario_platform_says_only_which_instance_it_is(path: Path) -> None:
    for platform in load(path)["platforms"]:
        extra = set(platform) - PLATFORM_KEYS
        assert not extra, f"{path.relative_to(ROOT)}: {platform['name']} sets {extra}: " \
            "lab flags belong in .config/molecule/config.yml"
        effective = template() | platform  # what the driver's create playbook sees
        assert {key: effective[key] for key in LAB_FLAGS} == LAB_FLAGS


@pytest.mark.parametrize("path", SCENARIOS, ids=scenario_id)
def test_instance_and_network_names_carry_the_tag(path: Path) -> None:
    """Concurrent runs with different COOPHOST_MOLECULE_TAG values never share a container."""
    for platform in load(path)["platforms"]:
        assert platform["name"].startswith(f"coophost-{TAG}-"), platform["name"]
        for network in platform.get("networks", []):
            assert network["name"].startswith(f"coophost-{TAG}-"), network["name"]
