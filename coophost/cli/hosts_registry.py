"""`coophost host add|list|remove`: hosts.yml from the command line (attached to `host`)."""

from __future__ import annotations

from typing import Any

import click

from coophost.cli.options import AppContext, json_option, pass_app


def _service_groups() -> list[str]:
    """The host groups the catalogue's services run on (for completion)."""
    from coophost.registry.catalogue import load_catalogue

    return sorted({service.group for service in load_catalogue().services.values()})


@click.command("add")
@click.argument("name")
@click.option("--address", required=True, help="Address to reach it over SSH (ansible_host).")
@click.option("--port", default=22, show_default=True, type=click.IntRange(1, 65535))
@click.option("--fqdn", help="Its public name (coophost_fqdn).")
@click.option("--ram-mb", required=True, type=click.IntRange(1), help="Declared RAM, MB.")
@click.option("--disk-gb", required=True, type=click.IntRange(1), help="Declared disk, GB.")
@click.option("--group", "groups", multiple=True,
              shell_complete=lambda _ctx, _param, incomplete: [
                  g for g in _service_groups() if g.startswith(incomplete)],
              help="A service group it serves (repeatable): a group of the catalogue's "
                   "services, see `coophost service list`.")
@pass_app
def add(app: AppContext, name: str, address: str, port: int, fqdn: str | None, ram_mb: int,
        disk_gb: int, groups: tuple[str, ...]) -> None:
    """Add a host to hosts.yml (enrol its SSH key separately)."""
    from coophost.registry.edit import add_host

    add_host(app.inventory, name, address=address, port=port, fqdn=fqdn, ram_mb=ram_mb,
             disk_gb=disk_gb, groups=groups)
    app.out.print(f"added host {name}")


@click.command("list")
@json_option
@pass_app
def list_(app: AppContext, as_json: bool) -> None:
    """List hosts with their groups, declared capacity, and what placed units use."""
    from coophost.desired.units import compute

    desired = compute(app.inventory)
    hosts = desired.hosts
    usage = desired.placement.usage
    count = {h: 0 for h in hosts}
    for unit in desired.units.values():
        count[unit.host] += 1
    rows: list[dict[str, Any]] = [
        {"host": h.name, "fqdn": h.fqdn, "groups": list(h.groups), "capacity": h.capacity,
         "used": usage.get(h.name, {}), "units": count[h.name]} for h in hosts.values()]
    if as_json:
        app.emit_json(rows)
        return
    from rich.table import Table

    table = Table("host", "groups", "units", "RAM MB used/declared", "disk GB used/declared",
                  box=None, pad_edge=False, header_style="bold")
    for row in rows:
        used, cap = row["used"], row["capacity"]
        table.add_row(str(row["host"]), ",".join(row["groups"]) or "-", str(row["units"]),
                      f"{used.get('ram_mb', 0)}/{cap['ram_mb']}",
                      f"{used.get('disk_gb', 0)}/{cap['disk_gb']}")
    app.out.print(table)


@click.command("remove")
@click.argument("name")
@pass_app
def remove(app: AppContext, name: str) -> None:
    """Remove a host from hosts.yml (refused while units are placed or applied on it)."""
    from coophost.registry.edit import remove_host
    from coophost.state import StateDB

    with StateDB(app.inventory) as state:
        applied = sum(1 for h, _, _ in state.applied().units if h == name)
    remove_host(app.inventory, name, applied)
    app.out.print(f"removed host {name}")


host_commands: list[click.Command] = [add, list_, remove]
commands: list[click.Command] = []
