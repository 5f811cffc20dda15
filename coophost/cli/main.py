"""The `coophost` command: the root group, and the one boundary that maps errors to exit codes."""

from __future__ import annotations

import importlib
import sys
import traceback
from pathlib import Path

import click
from click.shell_completion import get_completion_class
from rich.console import Console
from rich.markup import escape

from coophost import __version__
from coophost.cli.options import AppContext, make_context
from coophost.errors import EXIT_INTERRUPTED, EXIT_PENDING, EXIT_USAGE, CoophostError

# Command modules, each exporting `commands`: a list of click commands to add to the root.
COMMAND_MODULES = (
    "coophost.cli.lab",
    "coophost.cli.host",
    "coophost.cli.registry",
    "coophost.cli.plan",
    "coophost.cli.deploy",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="coophost")
@click.option("-i", "--inventory", type=click.Path(path_type=Path, file_okay=False),
              help="The co-op directory [env COOPHOST_INVENTORY; default inventories/lab].")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug output.")
@click.pass_context
def cli(ctx: click.Context, inventory: Path | None, debug: bool) -> None:
    """coophost: member-owned services for a hosting co-operative, from plain files in git."""
    ctx.obj = make_context(inventory, debug)
    _STATE["debug"] = debug


@cli.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the shell completion script, e.g. `eval "$(coophost completion bash)"`."""
    cls = get_completion_class(shell)
    if cls is None:  # pragma: no cover - click ships all three
        raise click.UsageError(f"no completion for {shell}")
    click.echo(cls(cli, {}, "coophost", "_COOPHOST_COMPLETE").source())


for _name in COMMAND_MODULES:
    for _command in importlib.import_module(_name).commands:
        cli.add_command(_command)

_STATE: dict[str, bool] = {"debug": False}


def _report(err: Console, error: CoophostError) -> None:
    err.print(f"[bold red]error:[/] {escape(error.message)}")
    if error.hint:
        err.print(f"[dim]hint:[/] {escape(error.hint)}")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and turn every outcome into one of DESIGN.md's exit codes."""
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        result = cli.main(args=args, prog_name="coophost", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return EXIT_USAGE
    except (click.Abort, KeyboardInterrupt):
        err.print("[yellow]interrupted[/]")
        return EXIT_INTERRUPTED
    except CoophostError as exc:
        if debug or _STATE["debug"]:
            traceback.print_exc()
        _report(err, exc)
        return exc.exit_code
    except Exception as exc:
        if debug or _STATE["debug"]:
            traceback.print_exc()
        err.print(f"[bold red]internal error:[/] {escape(type(exc).__name__)}: "
                  f"{escape(str(exc))} (run with --debug for the traceback)")
        return EXIT_PENDING
    return result if isinstance(result, int) else 0


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


__all__ = ["AppContext", "cli", "main", "run"]
