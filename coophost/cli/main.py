"""The `coophost` command: the root group, and the one boundary that maps errors to exit codes."""

from __future__ import annotations

import difflib
import importlib
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from coophost import __version__
from coophost.cli.options import AppContext, make_context, stderr_console
from coophost.errors import EXIT_INTERRUPTED, EXIT_PENDING, EXIT_USAGE, CoophostError

# Each root command and the module that defines it. A module exports `commands` (a list of
# click commands) and is imported only when one of its commands runs, or when a listing
# (`--help`, shell completion) needs their help text.
COMMAND_MODULES: dict[str, str] = {name: "coophost.cli." + name.replace("-", "_") for name in (
    "init", "member", "service", "secrets", "host", "plan", "render", "deploy", "runs", "drift",
    "dns", "requests", "members", "member-shell", "lab", "backup", "status", "workers",
    "artifacts")}
# coophost/cli/status.py defines all three
COMMAND_MODULES["notify"] = COMMAND_MODULES["doctor"] = COMMAND_MODULES["status"]


class LazyGroup(click.Group):
    """A click group whose commands come from modules imported on first use."""

    def __init__(self, *args: Any, lazy_commands: Mapping[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_commands = dict(lazy_commands)

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Every command name, loaded or not, sorted."""
        return sorted(set(self.commands) | set(self.lazy_commands))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """Return the command, importing its module the first time it is asked for."""
        if cmd_name not in self.commands and cmd_name in self.lazy_commands:
            self._load(self.lazy_commands[cmd_name], cmd_name)
        return self.commands.get(cmd_name)

    def resolve_command(self, ctx: click.Context, args: list[str]
                        ) -> tuple[str | None, click.Command | None, list[str]]:
        """Resolve as click does, with a did-you-mean among every command, loaded or not.

        (Click's own suggestion looks only at the commands already imported.)
        """
        name = click.utils.make_str(args[0])
        if (not ctx.resilient_parsing and not name.startswith("-")
                and self.get_command(ctx, name) is None):
            close = difflib.get_close_matches(name, self.list_commands(ctx), n=1)
            ctx.fail(f"No such command {name!r}."
                     + (f" Did you mean {close[0]!r}?" if close else ""))
        return super().resolve_command(ctx, args)

    def _load(self, module_name: str, cmd_name: str) -> None:
        for command in importlib.import_module(module_name).commands:
            if command.name is not None and command.name not in self.commands:
                self.add_command(command)
        if cmd_name not in self.commands:
            raise RuntimeError(f"{module_name} defines no command {cmd_name!r}")


@click.group(cls=LazyGroup, lazy_commands=COMMAND_MODULES,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="coophost")
@click.option("-i", "--inventory", type=click.Path(path_type=Path, file_okay=False),
              help="The co-op directory [env COOPHOST_INVENTORY; default: the nearest folder "
                   "upwards holding a coop.yml, else inventories/lab].")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug output.")
@click.option("--remote", metavar="USER@HOST[:PORT]",
              help="Run a member verb on the co-op's control host over SSH (members' use: "
                   "`coophost --remote me@coop.example status`).")
@click.option("--identity", type=click.Path(path_type=Path, dir_okay=False),
              help="With --remote: the SSH private key [default: ~/.ssh keys and the agent].")
@click.option("--known-hosts", type=click.Path(path_type=Path, dir_okay=False),
              help="With --remote: where the control host's key is pinned "
                   "[default: ~/.ssh/known_hosts].")
@click.pass_context
def cli(ctx: click.Context, inventory: Path | None, debug: bool, remote: str | None,
        identity: Path | None, known_hosts: Path | None) -> None:
    """coophost: member-owned services for a hosting co-operative, from plain files in git."""
    if remote or identity or known_hosts:  # main() sends --remote calls before click parses
        raise click.UsageError("--identity and --known-hosts go with --remote, before the verb")
    ctx.obj = make_context(inventory, debug)
    _STATE["debug"] = debug


@cli.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the shell completion script, e.g. `eval "$(coophost completion bash)"`."""
    from click.shell_completion import get_completion_class

    cls = get_completion_class(shell)
    if cls is None:  # pragma: no cover - click ships all three
        raise click.UsageError(f"no completion for {shell}")
    click.echo(cls(cli, {}, "coophost", "_COOPHOST_COMPLETE").source())


_STATE: dict[str, bool] = {"debug": False}


def _say(markup: str, *texts: str) -> None:
    """Print `markup` on stderr with each `texts` item escaped into its `{}` (rich, lazily)."""
    from rich.markup import escape

    stderr_console().print(markup.format(*(escape(text) for text in texts)))


def _print_traceback() -> None:
    import traceback

    traceback.print_exc()


def wants_json(args: list[str]) -> bool:
    """Whether the command line asks for JSON (`--json` before any `--`)."""
    return "--json" in (args[:args.index("--")] if "--" in args else args)


def _kind(error: CoophostError) -> str:
    """The error's class as a stable word for scripts: usage, config, validation, busy..."""
    from coophost.errors import ValidationError

    if isinstance(error, ValidationError):  # one problem or several
        return "validation"
    name = type(error).__name__
    return name.removesuffix("Error").lower() or "error"


def _fields(error: CoophostError) -> dict[str, object]:
    """What a validation error names: the file, the field, the value (as shown) and why.

    `errors` lists every problem found (one or more), each with its file, field, value,
    problem and hint; the first one's are also given at the top, as a single error's are.
    """
    from coophost.errors import ValidationError

    if not isinstance(error, ValidationError):
        return {}
    problems = []
    for one in error.errors:
        problem: dict[str, object] = {"file": one.file, "field": one.field, "value": one.shown,
                                      "problem": one.problem}
        if one.hint:
            problem["hint"] = one.hint
        problems.append(problem)
    return {"file": error.file, "field": error.field, "value": error.shown,
            "problem": error.problem, "errors": problems}


def _json_error(kind: str, message: str, hint: str | None, code: int,
                fields: dict[str, object] | None = None) -> None:
    """The error as one JSON document on stdout, for a caller that asked for --json."""
    import json

    error: dict[str, object] = {"kind": kind, "message": message, "exit_code": code}
    if hint:
        error["hint"] = hint
    error.update(fields or {})
    click.echo(json.dumps({"error": error}, indent=2, sort_keys=True))


def _report(error: CoophostError) -> None:
    """Print the error on stderr; a validation error with several problems, each with its hint."""
    problems = getattr(error, "errors", [error])
    if len(problems) > 1:
        for one in problems:
            _say("[bold red]error:[/] {}", one.message)
            if one.hint:
                _say("[dim]hint:[/] {}", one.hint)
        _say("[bold red]{} problems found[/]", str(len(problems)))
    else:
        _say("[bold red]error:[/] {}", error.message)
    if error.hint:
        _say("[dim]hint:[/] {}", error.hint)


_VALUE_OPTIONS = ("-i", "--inventory", "--remote", "--identity", "--known-hosts")


def remote_call(args: list[str]) -> tuple[str, Path | None, Path | None, list[str]] | None:
    """(target, identity, known_hosts, member words) when the root options hold --remote.

    Root options end at the first word that is not one (or at `--`); --help or --version
    before it leave the call to click.
    """
    found: dict[str, str] = {}
    index = 0
    while index < len(args) and args[index].startswith("-"):
        word = args[index]
        if word == "--":  # what follows goes to the member shell as it is
            index += 1
            break
        name, eq, value = word.partition("=")
        if name in ("-h", "--help", "--version"):
            return None
        if name in _VALUE_OPTIONS:
            if not eq:
                index += 1
                if index >= len(args):
                    raise click.UsageError(f"{name} needs a value")
                value = args[index]
            found[name] = value
        elif name != "--debug":
            return None  # an unknown root option: click reports it
        index += 1
    if "--remote" not in found:
        return None
    if "-i" in found or "--inventory" in found:
        raise click.UsageError("--remote speaks to the control host's co-op: -i is not used")
    identity = found.get("--identity")
    known = found.get("--known-hosts")
    return (found["--remote"], Path(identity) if identity else None,
            Path(known) if known else None, args[index:])


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and turn every outcome into one of DESIGN.md's exit codes."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    as_json = wants_json(args)
    try:
        remote = remote_call(args)
        if remote is not None:
            from coophost.remote import run_remote

            target, identity, known_hosts, words = remote
            return run_remote(target, words or ["help"], identity=identity,
                              known_hosts=known_hosts)
        result = cli.main(args=args, prog_name="coophost", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        if as_json:
            _json_error("usage", exc.format_message(), None, EXIT_USAGE)
        return EXIT_USAGE
    except (click.Abort, KeyboardInterrupt):
        _say("[yellow]interrupted[/]")
        return EXIT_INTERRUPTED
    except CoophostError as exc:
        if debug or _STATE["debug"]:
            _print_traceback()
        _report(exc)
        if as_json:
            _json_error(_kind(exc), exc.message, exc.hint, exc.exit_code, _fields(exc))
        return exc.exit_code
    except Exception as exc:
        if debug or _STATE["debug"]:
            _print_traceback()
        _say("[bold red]internal error:[/] {}: {} (run with --debug for the traceback)",
             type(exc).__name__, str(exc))
        return EXIT_PENDING
    return result if isinstance(result, int) else 0


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


__all__ = ["AppContext", "cli", "main", "run"]
