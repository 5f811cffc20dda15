"""Options every command shares, and the context object they fill."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from rich.console import Console

INVENTORY_ENV = "COOPHOST_INVENTORY"
DEFAULT_INVENTORY = Path("inventories/lab")

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class AppContext:
    """What the root command learned: where the co-op lives and how to talk.

    `out` and `err` are rich Consoles built on first use, so a command that prints plain text
    (`plan`, JSON output) never imports rich.
    """

    inventory: Path
    inventory_given: bool
    debug: bool

    @cached_property
    def out(self) -> Console:
        """Standard output; a pipe gets a fixed width (tables must not wrap at 80 columns)."""
        from rich.console import Console

        return Console(highlight=False, soft_wrap=True,
                       width=None if sys.stdout.isatty() else 120)

    @cached_property
    def err(self) -> Console:
        """Standard error."""
        return stderr_console()

    def emit_json(self, data: object) -> None:
        """Print `data` as JSON on stdout (one document, newline-terminated)."""
        click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def discover(start: Path) -> Path | None:
    """The nearest folder holding a coop.yml: `start`, then each parent (as git finds .git).

    Returned relative to `start` when it is `start` or above it ("." or "../.."), so that
    messages name it as the user would.
    """
    from coophost.layout import COOP_FILE

    start = start.absolute()
    for folder in (start, *start.parents):
        if (folder / COOP_FILE).is_file():
            return Path(os.path.relpath(folder, start))
    return None


def default_inventory() -> Path:
    """The co-op directory when none is named: found upwards from here, else the lab's."""
    return discover(Path.cwd()) or DEFAULT_INVENTORY


def make_context(inventory: Path | None, debug: bool) -> AppContext:
    """Build the AppContext from the root options, the environment and the current folder."""
    env = os.environ.get(INVENTORY_ENV)
    chosen = inventory or (Path(env) if env else None)
    return AppContext(
        inventory=chosen or default_inventory(),
        inventory_given=chosen is not None,
        debug=debug,
    )


def stderr_console() -> Console:
    """Return a rich Console on standard error (imports rich on first call)."""
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


pass_app = click.make_pass_decorator(AppContext)


def json_option(func: F) -> F:
    """`--json`: print data as JSON instead of a table."""
    return click.option("--json", "as_json", is_flag=True,
                        help="Print machine-readable JSON instead of a table.")(func)


def stdout_is_terminal() -> bool:
    """Whether standard output is a terminal (live progress) or a pipe (plain lines)."""
    return sys.stdout.isatty()


def stdin_is_terminal() -> bool:
    """Whether standard input is a terminal, to ask a person (else a missing answer is exit 2)."""
    return sys.stdin.isatty()


def _inventory_of(ctx: click.Context) -> Path:
    """The co-op directory a command line names (for completion, before the root runs)."""
    given = ctx.find_root().params.get("inventory")
    env = os.environ.get(INVENTORY_ENV)
    return Path(given) if given else Path(env) if env else default_inventory()


def member_names(inventory: Path) -> list[str]:
    """The members of a co-op by file name (members/<slug>.yml); nothing is parsed."""
    from coophost.layout import MEMBERS_DIR

    return sorted(p.stem for p in (inventory / MEMBERS_DIR).glob("*.yml"))


def host_names(inventory: Path) -> list[str]:
    """The hosts of a co-op's hosts.yml; none when it cannot be read."""
    from coophost.errors import CoophostError
    from coophost.registry.hosts import load_hosts

    try:
        return sorted(entry.name for entry in load_hosts(inventory))
    except (CoophostError, OSError):
        return []


def service_names() -> list[str]:
    """The services of the catalogue, coming ones included."""
    from coophost.registry.catalogue import load_catalogue

    return sorted(load_catalogue().services)


def _completer(names: Callable[[click.Context], list[str]]) -> Callable[..., list[Any]]:
    def complete(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[Any]:
        from click.shell_completion import CompletionItem

        return [CompletionItem(name) for name in names(ctx) if name.startswith(incomplete)]

    return complete


complete_member = _completer(lambda ctx: member_names(_inventory_of(ctx)))
complete_host = _completer(lambda ctx: host_names(_inventory_of(ctx)))
complete_service = _completer(lambda _ctx: service_names())
_COMPLETERS = {"member": complete_member, "host": complete_host, "service": complete_service}


def name_option(kind: str, text: str, *, dest: str | None = None,
                multiple: bool = False) -> Callable[[F], F]:
    """`--member`, `--host` or `--service`: the same spelling, metavar and completion everywhere."""
    return click.option(f"--{kind}", dest or kind, metavar=kind.upper(), multiple=multiple,
                        help=text, shell_complete=_COMPLETERS[kind])


def name_argument(kind: str, dest: str | None = None) -> Callable[[F], F]:
    """A MEMBER, HOST or SERVICE argument that completes names in the shell."""
    return click.argument(dest or kind, metavar=kind.upper(), shell_complete=_COMPLETERS[kind])


def table(app: AppContext, columns: list[str], rows: list[list[str]],
          title: str | None = None) -> None:
    """Print rows under column headings, in the one table style every command uses.

    Cells may hold rich markup (escape a member's text with `escape`); `title`, when given,
    is a line above the table.
    """
    from rich.table import Table

    shown = Table(*columns, box=None, pad_edge=False, header_style="bold")
    for row in rows:
        shown.add_row(*row)
    if title:
        app.out.print(f"[bold]{escape(title)}[/]")
    app.out.print(shown)


def next_step(app: AppContext, step: str) -> None:
    """Say what comes after a command that changed something: one `next:` line on stderr.

    Every command words it alike (`next: coophost deploy`), on standard error so that what a
    command prints on stdout (a zone file, a table) stays clean; none with --json.
    """
    app.err.print(f"[dim]next:[/] {escape(step)}")


def escape(text: str) -> str:
    """Text (a member's string) made safe to print through rich markup."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)
