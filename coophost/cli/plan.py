"""`coophost plan` and `coophost render`."""

from __future__ import annotations

from pathlib import Path

import click

from coophost.cli.options import AppContext, json_option, pass_app
from coophost.errors import EXIT_PENDING

SYMBOLS = {"add": "+", "change": "~", "remove": "-"}


@click.command()
@click.option("--member", "member_slug", metavar="MEMBER", help="Only this member's changes.")
@click.option("--host", "host_name", metavar="HOST", help="Only this host's changes.")
@json_option
@pass_app
def plan(app: AppContext, member_slug: str | None, host_name: str | None, as_json: bool) -> int:
    """Show what a deploy would change, per host and member; exit 1 when changes are pending."""
    from coophost.desired import plan as planning
    from coophost.desired.units import check_names, compute
    from coophost.state import StateDB

    desired = compute(app.inventory)
    check_names(desired, app.inventory, members=[member_slug] if member_slug else [],
                hosts=[host_name] if host_name else [])
    units = desired.unit_hashes()
    with StateDB(app.inventory) as state:
        applied = state.applied()
    result = planning.only(planning.diff(units, desired.host_hashes, applied),
                           member=member_slug, host=host_name)
    if as_json:
        data = result.as_json()
        data["new_placements"] = sorted(f"{m}/{s}" for m, s in desired.placement.new)
        app.emit_json(data)
    else:
        click.echo(format_plan(result, desired.placement.new), nl=False)
    return EXIT_PENDING if result.pending else 0


def format_plan(result: object, new_placements: set[tuple[str, str]]) -> str:
    """Return the plan as lines a person reads: per host, then per unit."""
    from coophost.desired.plan import Plan

    assert isinstance(result, Plan)
    if not result.pending:
        return ("No changes: the registry matches what was last applied (hosts were not "
                "contacted; `coophost drift` checks them).\n")
    by_host: dict[str, list[str]] = {}
    for change in result.changes:
        note = ""
        if change.moved:
            note = f" (moved {'from' if change.action != 'remove' else 'to'} {change.moved})"
        elif (change.member, change.service) in new_placements and change.action == "add":
            note = " (new placement)"
        by_host.setdefault(change.host, []).append(
            f"  {SYMBOLS[change.action]} {change.member}/{change.service}: {change.action}{note}")
    lines = []
    for host in result.changed_hosts():
        status = result.hosts[host].status if host in result.hosts else "changed"
        units = by_host.get(host, [])
        head = f"{host}: {len(units)} unit change(s)"
        if status == "new":
            head += ", never applied"
        elif status == "gone":
            head += ", no longer in hosts.yml"
        elif status == "changed" and not units:
            head += ", host configuration changed"
        lines.append(head)
        lines.extend(units)
    counts = {a: sum(1 for c in result.changes if c.action == a) for a in SYMBOLS}
    lines.append(f"Plan: {len(result.changes)} unit change(s) on {len(result.changed_hosts())} "
                 f"host(s): {counts['add']} to add, {counts['change']} to change, "
                 f"{counts['remove']} to remove.")
    return "\n".join(lines) + "\n"


@click.command()
@click.option("--host", "host_name", metavar="HOST", help="Only this host.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False),
              help="Write host_vars/ here [default: the co-op directory].")
@pass_app
def render(app: AppContext, host_name: str | None, out_dir: Path | None) -> None:
    """Write each host's desired state as an Ansible vars file (host_vars/HOST.yml)."""
    from coophost.desired.hostvars import render_hosts
    from coophost.lock import coop_lock
    from coophost.registry.edit import assign_lives
    from coophost.registry.loader import load_registry

    with coop_lock(app.inventory, purpose="render"):
        loaded = load_registry(app.inventory)
        if assign_lives(app.inventory, loaded):
            loaded = load_registry(app.inventory, base=loaded.base)  # the files just written
        written = render_hosts(loaded, out_dir or app.inventory, host_name)
    for path in written:
        app.out.print(f"wrote {path}")


commands: list[click.Command] = [plan, render]
