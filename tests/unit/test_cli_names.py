"""Members, hosts and services are named the same way by every command, and complete in a shell."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.shell_completion import ShellComplete

from coophost.cli.main import COMMAND_MODULES, cli

KINDS = {"MEMBER", "HOST", "SERVICE"}


def every_command() -> list[tuple[str, click.Command]]:
    """Every command and subcommand, loaded (the root imports modules lazily)."""
    ctx = click.Context(cli)
    found: list[tuple[str, click.Command]] = []

    def walk(path: str, command: click.Command) -> None:
        found.append((path, command))
        if isinstance(command, click.Group):
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                assert sub is not None
                walk(f"{path} {name}", sub)

    for name in COMMAND_MODULES:
        command = cli.get_command(ctx, name)
        assert command is not None
        walk(name, command)
    return found


def test_every_member_host_or_service_parameter_completes_names() -> None:
    plain, checked = [], 0
    for path, command in every_command():
        for param in command.params:
            named = ({"--member", "--host", "--service"} & set(param.opts)
                     or (isinstance(param, click.Argument) and param.name in ("slug", "host")))
            checked += bool(named)
            if named and (param.metavar not in KINDS or param._custom_shell_complete is None):
                plain.append(f"{path}: {param.opts}")
    assert checked >= 20, checked  # the walk reached the commands that name them
    assert not plain, f"parameters without the shared option: {plain}"


def complete(args: list[str], incomplete: str) -> list[str]:
    shell = ShellComplete(cli, {}, "coophost", "_COOPHOST_COMPLETE")
    return [item.value for item in shell.get_completions(args, incomplete)]


def test_member_names_complete_from_the_chosen_coop(coop: Path) -> None:
    assert complete(["-i", str(coop), "member", "show"], "b") == ["bread-coop"]
    assert complete(["-i", str(coop), "deploy", "--member"], "") == sorted(
        p.stem for p in (coop / "members").glob("*.yml"))


def test_host_and_service_names_complete(coop: Path) -> None:
    assert complete(["-i", str(coop), "deploy", "--host"], "h") == ["h1", "h2", "h3"]
    assert "mail" in complete(["-i", str(coop), "service", "enable", "ada-books"], "ma")


@pytest.mark.parametrize("missing", ["members", "hosts.yml"])
def test_completion_of_a_coop_without_files_offers_nothing(tmp_path: Path, missing: str) -> None:
    kind = "member show" if missing == "members" else "deploy --host"
    assert complete(["-i", str(tmp_path), *kind.split()], "") == []


@pytest.mark.parametrize(("service", "says"), [("mial", "did you mean"), ("discourse", "coming")])
def test_lab_probe_refuses_an_unknown_or_coming_service(coop: Path, cli, service: str,
                                                        says: str) -> None:
    code, _, err = cli("-i", str(coop), "lab", "probe", "--service", service)
    assert code == 2, err
    assert says in err.lower()
