"""`coophost members authorize|purge`: the member shell's keys; departed members' data purged."""

from __future__ import annotations

import datetime as dt
import shutil
import sys
from pathlib import Path
from typing import Any

import click

from coophost.cli.options import AppContext, json_option, next_step, pass_app
from coophost.errors import EnvironmentProblem


@click.group()
def members() -> None:
    """Things done for every member at once: SSH access to the member shell, purges."""


@members.command("authorize")
@click.option("--file", "target", type=click.Path(path_type=Path, dir_okay=False),
              help="The authorized_keys file to write [default: ~/.ssh/authorized_keys].")
@click.option("--coophost", "executable", metavar="PATH",
              help="The coophost the forced command runs [default: this one].")
@json_option
@pass_app
def authorize(app: AppContext, target: Path | None, executable: str | None,
              as_json: bool) -> None:
    """Bind every member's SSH keys to the member shell on this (the control) host.

    Writes one line per key, `command="coophost -i CO-OP member-shell SLUG",restrict KEY`, in
    a marked block of the file; the file's other lines are kept. Suspended and departed
    members keep the shell (to see their status and take their data out).
    """
    from coophost.members.authorize import key_lines, write_authorized_keys
    from coophost.registry.loader import load_registry

    registry = load_registry(app.inventory, need_hosts=False).registry
    program = executable or _this_coophost()
    lines = key_lines(registry.members.values(), program, app.inventory.resolve())
    path = target or Path.home() / ".ssh" / "authorized_keys"
    changed = write_authorized_keys(path, lines)
    if as_json:
        app.emit_json({"file": str(path), "keys": len(lines), "changed": changed})
        return
    app.out.print(f"{path}: {len(lines)} member key(s) "
                  f"{'written' if changed else 'already there'}")


def _this_coophost() -> str:
    """The absolute path of the coophost command being run (the forced command runs it)."""
    candidate = Path(sys.argv[0])
    if candidate.name == "coophost" and candidate.is_file():
        return str(candidate.resolve())
    beside = Path(sys.executable).parent / "coophost"  # the script of this environment
    if beside.is_file():
        return str(beside.absolute())
    found = shutil.which("coophost")
    if found is None:
        raise EnvironmentProblem("cannot tell where the coophost command is installed",
                                 hint="pass --coophost PATH")
    return str(Path(found).resolve())


@members.command("purge")
@click.option("--dry-run", is_flag=True, help="Only say what would be removed or deleted.")
@click.option("--today", type=click.DateTime(formats=["%Y-%m-%d"]), hidden=True,
              help="Count the retention period up to this day (tests).")
@json_option
@pass_app
def purge(app: AppContext, dry_run: bool, today: Any, as_json: bool) -> None:
    """Remove departed members' services and delete archived data past retention.

    Departed members past the period lose their services (the next `coophost deploy` takes
    them off the hosts and archives their data there). Archived data on the hosts and the
    secrets of removed members are deleted once the period is over, each deletion audited;
    nothing of an active or suspended member is ever deleted. coop.yml's
    `retention.departed_days` (default 30) sets the period. Moves older than
    `retention.relay_days` (default 7) are forgotten: their old hosts stop relaying mail.
    """
    from coophost.members import archive
    from coophost.members.audit import actor
    from coophost.members.lifecycle import DEFAULT_DEPARTED_DAYS, due_for_purge, expire_moves
    from coophost.members.lifecycle import purge as run_purge
    from coophost.registry.loader import load_coop

    day = today.date() if today else None
    if dry_run:
        slugs = [m.slug for m in due_for_purge(app.inventory, day)]
    else:
        slugs = run_purge(app.inventory, actor(), day)
    moves = expire_moves(app.inventory, actor(), day, dry_run)
    coop, _ = load_coop(app.inventory)
    days = coop.retention.get("departed_days", DEFAULT_DEPARTED_DAYS)
    expired = archive.due(archive.list_archives(app.inventory),
                          archive.living_owners(app.inventory), days,
                          day or dt.date.today())
    if not dry_run:
        archive.delete(app.inventory, expired, actor())
    if as_json:
        app.emit_json({"purged": slugs, "deleted": [e.as_dict() for e in expired],
                       "moves_expired": moves, "dry_run": dry_run})
        return
    verb = "would remove" if dry_run else "removed"
    app.out.print(f"{verb} the services of: {', '.join(slugs)}" if slugs
                  else "No departed member is past retention.")
    if moves:
        app.out.print(f"{'would forget' if dry_run else 'forgot'} the moves of: "
                      f"{', '.join(moves)} (their old hosts stop relaying at the next deploy)")
    for entry in expired:
        where = f"{entry.host}:{entry.path}" if entry.host else entry.path
        app.out.print(f"{'would delete' if dry_run else 'deleted'} {where} "
                      f"(archived {entry.archived})")
    if dry_run and (slugs or moves or expired):
        next_step(app, "coophost members purge")
    elif slugs or moves:
        next_step(app, "coophost deploy")


commands: list[click.Command] = [members]
