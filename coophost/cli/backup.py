"""`coophost backup ...`: back up member units now, list backups, restore, and drill."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from coophost.cli.options import (
    AppContext,
    complete_host,
    json_option,
    name_argument,
    name_option,
    next_step,
    pass_app,
)
from coophost.errors import EXIT_OK, EXIT_PENDING

if TYPE_CHECKING:
    from coophost.registry.loader import Loaded


@click.group()
def backup() -> None:
    """Backups of member units on the co-op's backup hosts (borg, encrypted per member)."""


def _loaded(app: AppContext) -> Loaded:
    from coophost.registry.loader import load_registry

    return load_registry(app.inventory)


@backup.command("run")
@name_option("member", "Only this member's units.", dest="member")
@name_option("host", "Only the units on this host (repeatable).", dest="hosts", multiple=True)
@json_option
@pass_app
def run_cmd(app: AppContext, member: str | None, hosts: tuple[str, ...], as_json: bool) -> int:
    """Back up units now, every service host at once; exit 1 when one failed.

    Each host's coophost-backup (the same the daily timer runs) writes each unit's manifest
    and pushes an archive of its data, append-only, to the backup hosts.
    """
    from coophost.backup.ops import run
    from coophost.cli.options import escape

    def say(text: str) -> None:
        if not as_json:
            app.err.print(f"[dim]backup[/] {text}")

    reports = run(_loaded(app), member, frozenset(hosts), progress=say)
    code = EXIT_OK if all(r.ok for r in reports) else EXIT_PENDING
    if as_json:
        app.emit_json({"exit_code": code, "hosts": [r.as_dict() for r in reports]})
        return code
    for report in reports:
        for item in report.archives:
            state = "[green]ok[/]" if item.get("ok") else "[red]FAILED[/]"
            size = item.get("deduplicated_size")
            added = (f"{size / 1e3:.1f} kB new" if isinstance(size, int)
                     else escape(str(item.get("error", ""))))
            app.out.print(f"{state} {report.host}  {item['owner']} {item['service']}  "
                          f"{item['archive']}  {item.get('files', 0)} files, {added}")
        if report.error and not report.archives:
            app.out.print(f"[red]FAILED[/] {report.host}  {report.error}")
    if not reports:
        app.out.print("no unit to back up")
    return code


@backup.command("list")
@name_option("member", "Only this member's units.", dest="member")
@json_option
@pass_app
def list_cmd(app: AppContext, member: str | None, as_json: bool) -> int:
    """Each unit's archives, its last backup's age and its last drill.

    Exit 1 when a unit's last backup is older than coop.yml allows
    (retention.backup_max_age_hours, 26 by default) or it has none.
    """
    from coophost.backup.ops import listing

    rows, code = listing(_loaded(app), member)
    if as_json:
        app.emit_json({"exit_code": code, "units": rows})
        return code
    from coophost.cli.options import table

    table(app, ["unit", "host", "archives", "last", "age", "last drill"], [[
        f"{r['member']}/{r['service']}", r["host"], str(r["archives"]), r["last"] or "-",
        (f"{r['age_hours']:.1f} h" if r["age_hours"] is not None else "-")
        + ("" if r["fresh"] else " (too old)" if r["last"] else " (none)"),
        ("-" if not r["drill"] else ("ok " if r["drill"]["ok"] else "FAILED ")
         + r["drill"]["archive"]),
    ] for r in rows])
    for r in rows:
        if r["error"]:
            app.err.print(f"{r['member']}/{r['service']}: {r['error']}")
    return code


@backup.command("restore")
@name_argument("member")
@click.argument("service")
@click.option("--archive", help="The archive to restore [default: the latest].")
@click.option("--to", "to", type=click.Path(path_type=Path, file_okay=False),
              help="Restore into this new or empty folder here instead of on the host.")
@click.option("--to-host", "to_host", metavar="HOST", shell_complete=complete_host,
              help="Restore onto this host, set aside in a root-only folder.")
@json_option
@pass_app
def restore_cmd(app: AppContext, member: str, service: str, archive: str | None,
                to: Path | None, to_host: str | None, as_json: bool) -> int:
    """Restore a unit's archive, checked file by file against its manifest.

    On the unit's host (default): the current data is kept in the service's archive folder
    and the restored data takes its place, only once it matched the manifest. With --to:
    into a local folder; with --to-host H: into a new folder of H readable by root alone
    (/var/lib/coophost-restore/OWNER.SERVICE.ARCHIVE), each file compared there. With
    either, nothing the unit's host serves changes.
    """
    from coophost.backup.ops import restore_on_host, restore_to_host, restore_to_path
    from coophost.errors import UsageError

    if to is not None and to_host is not None:
        raise UsageError("--to and --to-host: choose one")
    loaded = _loaded(app)
    if to_host is not None:
        data = restore_to_host(loaded, member, service, archive, to_host)
        data["to"] = f"{to_host}:{data['to']}"
    elif to is not None:
        result = restore_to_path(loaded, member, service, archive, to)
        data = {**result.as_dict(), "to": str(to)}
    else:
        data = restore_on_host(loaded, member, service, archive)
    code = EXIT_OK if data["ok"] else EXIT_PENDING
    if as_json:
        app.emit_json({"exit_code": code, **data})
        return code
    if data["ok"]:
        where = data.get("to") or data["host"]
        app.out.print(f"[green]restored[/] {member}/{service} from {data['archive']} on {where}"
                      + (f" ({data.get('detail')})" if data.get("detail") else ""))
        for kept in data.get("previous_data", []):
            app.out.print(f"  the data it replaced is kept in {kept}")
        if to is None and to_host is None:  # the unit serves the restored data now
            next_step(app, f"tell {member} that its {service} data is back")
    else:
        app.out.print(f"[red]not restored[/] {member}/{service}: "
                      f"{data.get('error') or data.get('detail')}")
        for problem in data.get("problems", []):
            app.out.print(f"  {problem}")
        next_step(app, f"coophost backup list --member {member} (pick another archive)")
    return code


@backup.command("drill")
@name_option("member", "Only this member's units.", dest="member")
@click.option("--all", "everyone", is_flag=True, help="Every unit of the co-op (the default).")
@json_option
@pass_app
def drill_cmd(app: AppContext, member: str | None, everyone: bool, as_json: bool) -> int:
    """Restore each unit's latest archive into a scratch folder and compare every file.

    Each file's SHA-256 against the archive's manifest, `git fsck` on each repository; the
    result is recorded (shown by `backup list`). Exit 1 on any difference.
    """
    from coophost.backup.ops import Drill, drill
    from coophost.cli.options import escape

    if member and everyone:
        raise click.UsageError("--member and --all exclude each other")

    def say(result: Drill) -> None:  # each unit as soon as it is drilled
        if not as_json:
            state = "[green]ok[/]" if result.ok else "[red]FAILED[/]"
            app.out.print(f"{state} {result.unit.name} {result.archive or '-'}  "
                          f"{escape(result.detail)}")

    results, code = drill(_loaded(app), member, progress=say)
    if as_json:
        app.emit_json({"exit_code": code, "units": [r.as_dict() for r in results]})
    elif not results:
        app.out.print("no unit to drill")
    return code


@backup.command("rollback")
@name_argument("member")
@click.argument("service")
@json_option
@pass_app
def rollback_cmd(app: AppContext, member: str, service: str, as_json: bool) -> int:
    """Bring back archives deleted with a service host's (append-only) key.

    `backup list` names a unit whose recorded archives vanished without a prune by coophost.
    The repository is rolled back on the backup host to the last transaction that lists them
    all; what came later is moved to /srv/borg/quarantine there, never deleted.
    """
    from coophost.backup.ops import rollback

    def say(text: str) -> None:
        if not as_json:
            app.err.print(f"[dim]rollback[/] {text}")

    result = rollback(_loaded(app), member, service, progress=say)
    code = EXIT_OK if result["ok"] else EXIT_PENDING
    if as_json:
        app.emit_json({"exit_code": code, **result})
    else:
        state = "[green]ok[/]" if result["ok"] else "[red]FAILED[/]"
        app.out.print(f"{state} {member}/{service}: {result['detail']}")
    return code


@backup.command("prune")
@name_option("member", "Only this member's units.", dest="member")
@json_option
@pass_app
def prune_cmd(app: AppContext, member: str | None, as_json: bool) -> int:
    """Delete archives older than coop.yml's retention.backups_days (the last one stays).

    Only the controller's key can delete. A repository whose archives vanished (a service
    host's append-only delete) is refused, so that the deletion is not made final; exit 1.
    """
    from coophost.backup.ops import prune

    results, code = prune(_loaded(app), member)
    if as_json:
        app.emit_json({"exit_code": code, "units": results})
        return code
    for row in results:
        state = "[green]ok[/]" if row["ok"] else "[red]REFUSED[/]"
        text = row.get("error") or f"{len(row['pruned'])} pruned, {row['kept']} kept"
        app.out.print(f"{state} {row['member']}/{row['service']}  {text}")
    return code


@backup.command("handover")
@name_argument("member", "slug")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path),
              help="A new or empty folder for the copies.")
@json_option
@pass_app
def handover_cmd(app: AppContext, slug: str, out: Path, as_json: bool) -> int:
    """Hand a member its borg repositories, their keys and its passphrase (departure).

    Each repository of the member's life (one per service host it had) is copied from the
    backup host, and the copy is checked as the member would open it: extracted and listed
    with the passphrase alone. With the member's takeout (`member depart`), this is all it
    needs to leave with its history. Exit 1 when a repository could not be handed over whole.
    """
    from coophost.backup.ops import handover
    from coophost.cli.options import escape

    def say(text: str) -> None:
        if not as_json:
            app.err.print(f"[dim]handover[/] {escape(text)}")

    handed = handover(_loaded(app), slug, out, progress=say)
    code = EXIT_OK if handed and all(not h.error for h in handed) else EXIT_PENDING
    if as_json:
        app.emit_json({"exit_code": code, "out": str(out),
                       "repositories": [h.as_dict() for h in handed]})
        return code
    if not handed:
        app.out.print(f"{slug} has no backup repository to hand over")
    for item in handed:
        if item.error:
            app.out.print(f"[red]FAILED[/] {item.host}: {escape(item.error)}")
        else:
            app.out.print(f"ok {item.host}: {item.tarball} ({item.size} bytes, {item.archives} "
                          f"archives, opened with the passphrase alone), key {item.key}")
    app.out.print(f"{out}: README.txt says how to read them; `passphrase` opens them "
                  "(0600)")
    next_step(app, f"hand {out} to {slug}, and its passphrase privately")
    return code


commands: list[click.Command] = [backup]
