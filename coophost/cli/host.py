"""`coophost host ...`: the co-op's hosts."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import click

from coophost.cli.hosts_registry import host_commands
from coophost.cli.options import AppContext, json_option, pass_app
from coophost.errors import EXIT_OK, EXIT_PENDING, EXIT_UNREACHABLE, ConfigError

if TYPE_CHECKING:
    from rich.table import Table

    from coophost.ssh import HostReport


@click.group()
def host() -> None:
    """The co-op's hosts: register, list, remove, and preflight checks."""


@host.command()
@click.argument("names", nargs=-1, metavar="[HOST]...")
@json_option
@pass_app
def check(app: AppContext, names: tuple[str, ...], as_json: bool) -> int:
    """Check hosts over SSH: reachable, pinned key, python3, sudo, disk, memory, OS.

    Exit 4 when a host is unreachable or its key does not match the pinned one, 1 when a
    reachable host fails a check.
    """
    from coophost.layout import KNOWN_HOSTS_FILE
    from coophost.registry.hosts import load_hosts
    from coophost.ssh import preflight  # paramiko is slow to import: only when checking

    hosts = load_hosts(app.inventory)
    if names:
        unknown = sorted(set(names) - {h.name for h in hosts})
        if unknown:
            raise ConfigError(f"{app.inventory}/hosts.yml: no host {', '.join(unknown)}")
        hosts = [h for h in hosts if h.name in names]
    known_hosts = app.inventory / KNOWN_HOSTS_FILE
    with ThreadPoolExecutor(max_workers=min(16, len(hosts) or 1)) as pool:
        reports = list(pool.map(lambda h: preflight(h, known_hosts), hosts))
    if as_json:
        app.emit_json([r.as_dict() for r in reports])
    else:
        app.out.print(_table(reports))
        for report in reports:
            if report.error:
                app.err.print(f"[red]{report.host}[/]: {report.error}")
    if any(not r.reachable or r.host_key != "ok" for r in reports):
        return EXIT_UNREACHABLE
    return EXIT_OK if all(r.ok for r in reports) else EXIT_PENDING


def _table(reports: list[HostReport]) -> Table:
    from rich.table import Table

    table = Table(title="host check")
    for column in ("host", "ok", "key", "os", "python", "priv", "disk free", "mem free"):
        table.add_column(column, no_wrap=True)
    for r in reports:
        table.add_row(r.host, "yes" if r.ok else "[red]no[/]", r.host_key, r.os, r.python,
                      r.privilege, f"{r.disk_free_gb:.0f} GB", f"{r.mem_available_mb} MB")
    return table


for _command in host_commands:
    host.add_command(_command)

commands = [host]
