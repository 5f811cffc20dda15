"""`coophost plan`: what a deploy would change, from the registry and state.db alone."""

from __future__ import annotations

from typing import Any, cast

import click

from coophost.cli.options import AppContext, json_option, name_option, pass_app
from coophost.errors import EXIT_PENDING

SYMBOLS = {"add": "+", "change": "~", "remove": "-"}


@click.command()
@name_option("member", "Only this member's changes.", dest="member_slug")
@name_option("host", "Only this host's changes.", dest="host_name")
@json_option
@pass_app
def plan(app: AppContext, member_slug: str | None, host_name: str | None, as_json: bool) -> int:
    """Show what a deploy would change, per host and member; exit 1 when changes are pending."""
    from coophost.deploy.jobs import Selection, choose_path
    from coophost.desired import plan as planning
    from coophost.desired.units import check_names, compute, fast_capable
    from coophost.state import StateDB

    desired = compute(app.inventory)
    check_names(desired, app.inventory, members=[member_slug] if member_slug else [],
                hosts=[host_name] if host_name else [])
    units = desired.unit_hashes()
    with StateDB(app.inventory) as state:
        applied = state.applied()
        whole = planning.diff(units, desired.host_hashes, applied)
        result = planning.only(whole, member=member_slug, host=host_name)
        changed = [(c.host, c.member, c.service) for c in result.changes
                   if c.action == planning.CHANGE]
        stored = state.applied_settings() if changed else {}
    capable = fast_capable(desired.catalogue) if result.pending else set()
    # The path a plain deploy would take on each host (coophost.deploy.jobs.choose_path), from
    # all of the host's changes (a --member plan shows only that member's).
    paths = {host: choose_path(whole.hosts[host].status,
                               [c for c in whole.changes if c.host == host],
                               desired.host_levels.get(host, ""), applied.levels.get(host),
                               capable, Selection())[:2]
             for host in result.changed_hosts()
             if host in desired.host_levels and host in whole.hosts}
    details = setting_changes(app, changed, stored, desired.role_versions) if changed else {}
    if as_json:
        data = result.as_json()
        entries = cast(list[dict[str, Any]], data["changes"])
        for change, entry in zip(result.changes, entries, strict=True):
            found = details.get((change.host, change.member, change.service))
            entry["settings"] = None if found is None else [
                {"key": d.key, "old": d.old, "new": d.new} for d in found]
        data["new_placements"] = sorted(f"{m}/{s}" for m, s in desired.placement.new)
        data["paths"] = {h: {"path": p, "why": why} for h, (p, why) in sorted(paths.items())}
        app.emit_json(data)
    else:
        click.echo(format_plan(result, desired.placement.new, details, paths), nl=False)
    return EXIT_PENDING if result.pending else 0


def setting_changes(app: AppContext, changed: list[tuple[str, str, str]],
                    stored: dict[tuple[str, str, str], str | None],
                    role_versions: dict[str, str]) -> dict[tuple[str, str, str], Any]:
    """Each changed unit's setting changes (None when unknown), from the member files."""
    from coophost.desired.settings import explain, fingerprint
    from coophost.registry.loader import load_registry

    loaded = load_registry(app.inventory, need_hosts=False)
    members, services = loaded.registry.members, loaded.catalogue.services
    current = {(m, s): fingerprint(members[m], services[s], role_versions[s])
               for _, m, s in changed if m in members and s in services}
    return explain(changed, stored, current)


def format_plan(result: object, new_placements: set[tuple[str, str]],
                details: dict[tuple[str, str, str], Any] | None = None,
                paths: dict[str, tuple[str, str]] | None = None) -> str:
    """Return the plan as lines a person reads: per host, then per unit.

    `paths`: host -> the path a deploy takes there (full or fast) and why.
    """
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
        lines_of = by_host.setdefault(change.host, [])
        lines_of.append(
            f"  {SYMBOLS[change.action]} {change.member}/{change.service}: {change.action}{note}")
        if change.action == "change" and details is not None:
            found = details.get((change.host, change.member, change.service))
            if found is None:
                lines_of.append("      (what changed is not known: its settings were not "
                                "recorded when it was applied)")
            elif not found:
                lines_of.append("      (no recorded value changed: a hidden one did)")
            lines_of.extend(f"      {item.as_text()}" for item in found or ())
    lines = []
    for host in result.changed_hosts():
        status = result.hosts[host].status if host in result.hosts else "changed"
        units = by_host.get(host, [])
        count = sum(1 for c in result.changes if c.host == host)
        head = f"{host}: {count} unit change(s)"
        if status == "new":
            head += ", never applied"
        elif status == "gone":
            head += ", no longer in hosts.yml"
        elif status == "changed" and not units:
            head += ", host configuration changed"
        lines.append(head)
        lines.extend(units)
        if paths and host in paths:
            lines.append(f"  deploy takes the {paths[host][0]} path: {paths[host][1]}")
    counts = {a: sum(1 for c in result.changes if c.action == a) for a in SYMBOLS}
    lines.append(f"Plan: {len(result.changes)} unit change(s) on {len(result.changed_hosts())} "
                 f"host(s): {counts['add']} to add, {counts['change']} to change, "
                 f"{counts['remove']} to remove.")
    return "\n".join(lines) + "\n"


commands: list[click.Command] = [plan]
