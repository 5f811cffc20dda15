"""The root command loads command modules lazily, and every command stays reachable."""

from __future__ import annotations

import importlib
import subprocess
import sys

import click
from click.testing import CliRunner

from coophost.cli.main import COMMAND_MODULES, cli


def test_the_table_names_exactly_what_each_module_defines() -> None:
    for module_name in set(COMMAND_MODULES.values()):
        defined = {c.name for c in importlib.import_module(module_name).commands}
        listed = {name for name, module in COMMAND_MODULES.items() if module == module_name}
        assert defined == listed, module_name


def test_every_command_is_reachable_and_listed() -> None:
    ctx = click.Context(cli)
    names = cli.list_commands(ctx)
    assert set(COMMAND_MODULES) | {"completion"} == set(names)
    for name in names:
        assert cli.get_command(ctx, name) is not None, name
    host = cli.get_command(ctx, "host")
    assert isinstance(host, click.Group)
    assert {"check", "add", "enrol", "list", "remove"} <= set(host.list_commands(ctx))
    assert cli.get_command(ctx, "nope") is None


def test_help_lists_every_command() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name in [*COMMAND_MODULES, "completion"]:
        if name == "member-shell":  # the forced command of member keys: not for people
            assert "member-shell" not in result.output
            continue
        assert f"  {name} " in result.output


def test_start_up_imports_no_command_module_and_no_rich() -> None:
    code = ("import sys, coophost.cli.main\n"
            "print(sorted(m for m in sys.modules if m.startswith(('rich', 'coophost.cli.'))))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True).stdout
    assert out.strip() == "['coophost.cli.main', 'coophost.cli.options']"


def test_plain_commands_do_not_import_rich() -> None:
    code = ("import sys\nfrom coophost.cli.main import main\n"
            "main(['completion', 'bash'])\n"
            "print([m for m in sys.modules if m.startswith('rich')], file=sys.stderr)")
    err = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True).stderr
    assert err.strip() == "[]"
