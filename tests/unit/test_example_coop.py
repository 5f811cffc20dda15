"""inventories/example, the production template docs/production.md ends with, is a valid co-op:
it loads, plans, has the host groups the guide relies on, and every command the guide shows
exists with the options it uses."""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "inventories" / "example"
GUIDE = ROOT / "docs" / "production.md"


@pytest.fixture
def example(tmp_path: Path) -> Path:
    copy = tmp_path / "example"
    shutil.copytree(EXAMPLE, copy, ignore=shutil.ignore_patterns(".coophost"))
    return copy


def test_the_example_coop_loads_and_plans_its_members_units(example: Path, cli) -> None:
    code, out, err = cli("-i", str(example), "plan", "--json")
    assert code == 1, err  # 1: there is something to deploy (nothing ever was)
    plan = json.loads(out)
    assert {c["member"] for c in plan["changes"]} == {
        p.stem for p in (example / "members").glob("*.yml")}
    assert all(c["action"] == "add" for c in plan["changes"])


def test_the_example_coop_has_the_groups_the_guide_relies_on(example: Path) -> None:
    from coophost.registry.loader import load_registry

    registry = load_registry(example).registry
    groups = {g for host in registry.hosts.values() for g in host.groups}
    assert {"mail", "git", "backup", "dns"} <= groups
    assert registry.coop.dns_zones  # the guide's section 6: the co-op serves a zone
    backup_hosts = [h for h in registry.hosts.values() if "backup" in h.groups]
    # the backup host runs no member service
    assert backup_hosts and all(h.groups == ("backup",) for h in backup_hosts)
    for member in registry.members.values():
        assert set(member.placement.values()) <= set(registry.hosts)


def guide_commands() -> list[list[str]]:
    """Every `coophost ...` command line of the guide's code blocks, continuation lines joined."""
    blocks = re.findall(r"```sh\n(.*?)```", GUIDE.read_text(), flags=re.S)
    text = "\n".join(blocks).replace("\\\n", " ")
    commands = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("coophost "):
            commands.append(shlex.split(line)[1:])
    return commands


def test_the_guide_shows_the_first_steps() -> None:
    assert {tuple(argv[:2]) for argv in guide_commands()} >= {("init", "coop"), ("host", "enrol")}


@pytest.mark.parametrize("argv", guide_commands(), ids=" ".join)
def test_every_command_of_the_guide_exists_with_its_options(argv: list[str], cli) -> None:
    """`--help` of the command, then each option the guide gives it is one it has."""
    import click

    from coophost.cli.main import cli as root

    path: list[str] = []
    command: click.Command = root
    for word in argv:  # down the groups: the rest are the command's arguments
        if not isinstance(command, click.Group):
            break
        found = command.get_command(click.Context(command), word)
        assert found is not None, f"no command `coophost {' '.join([*path, word])}`"
        path.append(word)
        command = found
    code, out, err = cli(*path, "--help")
    assert code == 0, err
    for option in (w.split("=")[0] for w in argv if w.startswith("--")):
        assert option in out, f"`coophost {' '.join(path)}` has no {option}"


def test_a_second_dns_host_is_refused_naming_both(example: Path, cli) -> None:
    """Each dns host would sign and serve its own copy of the zones, and `dns push` updates only
    the first: until secondaries exist, a second one is a configuration error."""
    hosts = example / "hosts.yml"
    text = hosts.read_text()
    assert "    dns:\n      hosts:\n        mx2:\n" in text
    hosts.write_text(text.replace("    dns:\n      hosts:\n        mx2:\n",
                                  "    dns:\n      hosts:\n        mx2:\n        mx1:\n"))
    before = sorted(p.relative_to(example) for p in example.rglob("*"))
    code, _, err = cli("-i", str(example), "plan")
    assert code == 2, err
    assert "hosts.yml" in err and "dns.hosts" in err and "mx1, mx2" in err
    assert "only one authoritative DNS host" in err
    assert sorted(p.relative_to(example) for p in example.rglob("*")) == before
