"""`coophost status` and `coophost notify`: is the co-op well, and tell its people when not."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from coophost.cli.options import AppContext, json_option, name_option, next_step, pass_app
from coophost.errors import UsageError

if TYPE_CHECKING:
    from coophost.health.checks import Check, Thresholds
    from coophost.health.gather import Report
    from coophost.registry.loader import Loaded


def _limits_options(func: Any) -> Any:
    func = click.option("--cert-days", type=click.IntRange(0, 36500), default=14,
                        show_default=True,
                        help="Flag a certificate that expires within this many days.")(func)
    func = click.option("--queue-max", type=click.IntRange(0), default=100, show_default=True,
                        help="Flag a mail queue longer than this.")(func)
    return click.option("--no-backups", is_flag=True,
                        help="Skip the backup and drill checks (they read the backup host).")(func)


def _limits(cert_days: int, queue_max: int) -> Thresholds:
    from coophost.health.checks import Thresholds

    return Thresholds(cert_days=cert_days, mail_queue=queue_max)


def _load(app: AppContext, hosts: tuple[str, ...], member: str | None) -> Loaded:
    from coophost.registry import checks as registry_checks
    from coophost.registry.loader import load_registry

    loaded = load_registry(app.inventory)
    if member and member not in loaded.registry.members:
        raise registry_checks.no_member(member, loaded.registry.members)
    for host in hosts:
        if host not in loaded.registry.hosts:
            raise registry_checks.no_host(host, sorted(loaded.registry.hosts))
    return loaded


def _summary(report: Report) -> list[list[str]]:
    """One row per host: its verdict and the figures a sysadmin looks at first."""
    rows = []
    for host in report.hosts:
        mine = [c for c in report.checks if c.host == host]
        bad = [c for c in mine if not c.ok]

        def detail(kind: str, mine: list[Check] = mine) -> str:
            found = [c.detail for c in mine if c.kind == kind]
            return found[0] if found else ""

        services = [c for c in mine if c.kind == "service"]
        certs = [c for c in mine if c.kind == "certificate"]
        due = sum(not c.ok for c in certs)
        rows.append([host, "ok" if not bad else f"{len(bad)} to fix",
                     f"{sum(c.ok for c in services)}/{len(services)} up",
                     (f"{len(certs)}" + (f", {due} due" if due else "")) if certs else "-",
                     detail("mail queue").split(" ")[0] or "-",
                     detail("disk").split(" (")[-1].rstrip(")") or "-",
                     detail("memory").split(" (")[-1].rstrip(")") or "-",
                     _short_deploy(detail("deploy"))])
    return rows


def _relays(report: Report) -> list[str]:
    """Hosts where RELAY_UNIT is active (so they are reachable over pinned SSH too)."""
    return sorted(c.host for c in report.checks
                  if c.ok and c.key == f"{c.host}/unit/{RELAY_UNIT}")


def _finish(app: AppContext, loaded: Loaded, report: Report, *, keep: bool, as_json: bool,
            everything: bool) -> int:
    """Keep a full run's results for the member shell, print the report, give its exit code."""
    from coophost.health.gather import record
    from coophost.state import StateDB

    if keep:
        with StateDB(loaded.root) as db:
            record(db, report, scope_hosts=report.hosts)
    show(app, report, as_json, everything)
    return report.exit_code


def _short_deploy(detail: str) -> str:
    """`last deploy ok (run 3, 2026-12-06 21:40 UTC)` -> `ok, run 3, 12-06 21:40`."""
    if not detail.startswith("last deploy "):
        return detail or "-"
    verdict, _, rest = detail.removeprefix("last deploy ").partition(" (")
    run, _, when = rest.partition(", ")
    return f"{verdict}, {run}, {when[5:16]}" if when else verdict


def show(app: AppContext, report: Report, as_json: bool, everything: bool) -> None:
    """Print a report: a table per host, then what needs attention and what to do."""
    from rich.table import Table

    from coophost.health.checks import day

    if as_json:
        app.emit_json({"exit_code": report.exit_code, "checked_at": day(report.at),
                       "hosts": report.hosts, "checks": [c.as_dict() for c in report.checks]})
        return
    table = Table(title=f"status at {day(report.at)}")
    for column in ("host", "state", "services", "certificates", "mail queue", "disk free",
                   "memory free", "last deploy"):
        table.add_column(column)
    for row in _summary(report):
        colour = "green" if row[1] == "ok" else "red"
        table.add_row(row[0], f"[{colour}]{row[1]}[/]", *row[2:])
    app.out.print(table)
    backups = [c for c in report.checks if c.kind in ("backup", "drill")]
    if backups:
        fine = sum(c.ok for c in backups if c.kind == "backup")
        drilled = sum(c.ok for c in backups if c.kind == "drill")
        units = len(backups) // 2
        app.out.print(f"backups: {fine}/{units} units backed up in time, "
                      f"{drilled}/{units} drilled in time")
    artifacts = [c for c in report.checks if c.kind == "artifact"]
    if artifacts:
        app.out.print(f"artifacts: {sum(c.ok for c in artifacts)}/{len(artifacts)} of the "
                      "catalogue stored and verified on this controller")
    if everything:
        detail = Table(title="every check")
        for column in ("host", "check", "state", "detail"):
            detail.add_column(column)
        for check in report.checks:
            detail.add_row(check.host, check.kind,
                           "[green]ok[/]" if check.ok else "[red]attention[/]", check.detail)
        app.out.print(detail)
    bad = [c for c in report.checks if not c.ok]
    if not bad:
        app.out.print(f"all {len(report.checks)} checks ok")
        return
    app.out.print(f"[red]{len(bad)} of {len(report.checks)} checks need attention:[/]")
    for check in bad:
        app.out.print(f"  {check.host or 'co-op'}: {check.detail}")
        if check.advice:
            app.out.print(f"    next: {check.advice}")


@click.command("status")
@name_option("host", "Only this host (repeatable).", dest="hosts", multiple=True)
@name_option("member", "Only what concerns this member's units.")
@_limits_options
@click.option("--all", "everything", is_flag=True, help="List every check, not only problems.")
@json_option
@pass_app
def status(app: AppContext, hosts: tuple[str, ...], member: str | None, cert_days: int,
           queue_max: int, no_backups: bool, everything: bool, as_json: bool) -> int:
    """Is the co-op well? Exit 1 when anything needs attention.

    Per host: services, ports, certificates, mail queue, disk, memory, last deploy; per
    unit: its last backup and drill. Each host is probed over SSH (pinned keys), all at
    once; a host that cannot be reached is itself a finding. The results
    are kept for members' `status` in the member shell.
    """
    from coophost.health.gather import run_checks

    loaded = _load(app, hosts, member)
    report = run_checks(loaded, _limits(cert_days, queue_max), hosts=hosts, member=member,
                        backups=not no_backups)
    return _finish(app, loaded, report, keep=not member and not no_backups, as_json=as_json,
                   everything=everything)


@click.command("doctor")
@name_option("host", "Only this host (repeatable).", dest="hosts", multiple=True)
@_limits_options
@click.option("--nameserver", metavar="IP[:PORT]",
              help="Ask this resolver for members' records [default: the lab's DNS for a lab "
                   "co-op, else the system's resolvers].")
@click.option("--all", "everything", is_flag=True, help="List every check, not only problems.")
@json_option
@pass_app
def doctor(app: AppContext, hosts: tuple[str, ...], cert_days: int, queue_max: int,
           no_backups: bool, nameserver: str | None, everything: bool, as_json: bool) -> int:
    """`status`, and what needs the outside: exit 1 when anything needs attention.

    Adds each member's DNS records as a resolver answers them (as `dns check`), SMTP from
    each mail host to every other (EHLO on port 25, through the host's own resolver), and
    the ACME directory fetched from each host (its own trust store).
    """
    from coophost.cli.dns import _lab_nameserver
    from coophost.dns.ops import parse_nameserver
    from coophost.health.gather import run_checks
    from coophost.health.outside import dns_checks, reach

    loaded = _load(app, hosts, None)
    where = parse_nameserver(nameserver) if nameserver else _lab_nameserver(app)
    report = run_checks(loaded, _limits(cert_days, queue_max), hosts=hosts,
                        backups=not no_backups)
    up = {c.host for c in report.checks if c.key == f"{c.host}/reachable" and c.ok}
    report.checks += reach(loaded, sorted(up), _relays(report))
    if not hosts:
        report.checks += dns_checks(loaded, where)
    return _finish(app, loaded, report, keep=not no_backups and not hosts, as_json=as_json,
                   everything=everything)


@click.group("notify")
def notify() -> None:
    """Mail the co-op's contacts when a check changes state, and members about requests."""


@notify.command("run")
@_limits_options
@click.option("--dry-run", is_flag=True, help="Print what would be mailed; send and record "
              "nothing.")
@json_option
@pass_app
def notify_run(app: AppContext, cert_days: int, queue_max: int, no_backups: bool,
               dry_run: bool, as_json: bool) -> int:
    """Run every check and mail what changed since the last run (exit codes as `status`).

    One mail to coop.yml's contacts per run that found a change (a problem, or a recovery),
    and one to a member whose request was approved, denied or went live. Nothing is mailed
    twice for the same state; a mail that could not be sent is sent by the next run. The
    timer `coophost notify timer` installs runs this every few minutes.
    """
    from coophost.health.gather import record, run_checks
    from coophost.lock import coop_lock
    from coophost.state import StateDB

    loaded = _load(app, (), None)
    report = run_checks(loaded, _limits(cert_days, queue_max), backups=not no_backups)
    with coop_lock(loaded.root, purpose="notify", name="notify.lock"), StateDB(loaded.root) as db:
        if not no_backups:
            record(db, report, scope_hosts=report.hosts)
        sent, failed = _deliver(loaded, report, db, dry_run)
    if as_json:
        app.emit_json({"exit_code": report.exit_code, "sent": sent, "unsent": failed,
                       "attention": [c.as_dict() for c in report.checks if not c.ok]})
    else:
        for mail in sent:
            verb = "would mail" if dry_run else "mailed"
            app.out.print(f"{verb} {', '.join(mail['to'])}: {mail['subject']}")
        for problem in failed:
            app.err.print(f"[red]not sent[/]: {problem}")
        if not sent and not failed:
            app.out.print("nothing new to mail")
        bad = sum(not c.ok for c in report.checks)
        app.out.print(f"{bad} of {len(report.checks)} checks need attention"
                      + (" (`coophost status`)" if bad else ""))
    if failed:
        from coophost.errors import ExternalCommandError

        raise ExternalCommandError(f"{len(failed)} notification(s) not sent: {failed[0]}",
                                   hint="the next run sends them again")
    return report.exit_code


def _deliver(loaded: Loaded, report: Report, db: Any, dry_run: bool
             ) -> tuple[list[dict[str, Any]], list[str]]:
    """Work out what is news, send it through a healthy mail host, record what went out."""
    from coophost.errors import CoophostError
    from coophost.health import notify as news
    from coophost.layout import KNOWN_HOSTS_FILE
    from coophost.members.requests import load_requests, shown_state, unit_states
    from coophost.registry.hosts import connections

    registry = loaded.registry
    mailed = news.mailed_states(db)
    found = news.changes(report.checks, mailed)
    mails = []
    contact = news.contact_mail(registry.coop.name, registry.coop.contacts, found)
    if contact:
        mails.append(contact)
    requests = load_requests(loaded.root, closed=True)
    deployed = [key for key, (_h, done) in unit_states(loaded).items() if done]
    shown = {r.id: shown_state(r, deployed) for r in requests}
    contacts = {m.slug: m.contact for m in registry.members.values()}
    member_mails, quiet = news.request_mails(requests, shown, contacts, mailed,
                                             registry.coop.name, time.time())
    mails += member_mails
    if dry_run:
        return [{"to": list(m.to), "subject": m.subject, "body": m.body} for m in mails], []
    news.remember(db, found.quiet | quiet)
    if not mails:
        return [], []
    entries = connections(registry.hosts)
    relays = _relays(report)  # postfix up, whichever service runs it
    if not relays:
        return [], [f"no mail host with postfix up to send {len(mails)} message(s) through"]
    sent, failed = [], []
    for mail in mails:
        problem = ""
        for relay in relays:
            host = registry.hosts[relay]
            try:
                news.send(entries[relay], loaded.root / KNOWN_HOSTS_FILE,
                          f"coophost@{host.fqdn}", mail)
            except CoophostError as exc:
                problem = exc.message
                continue
            news.remember(db, mail.keys)
            sent.append({"to": list(mail.to), "subject": mail.subject, "via": relay})
            break
        else:
            failed.append(f"to {', '.join(mail.to)}: {problem}")
    return sent, failed


RELAY_UNIT = "postfix.service"  # notifications go out through a host where it is active

TIMER_SERVICE = """[Unit]
Description=coophost: check the co-op and mail what changed
Wants=network-online.target
After=network-online.target

[Service]
Type=oneshot
WorkingDirectory={workdir}
ExecStart={python} -m coophost -i {inventory} notify run
{environment}NoNewPrivileges=yes
PrivateTmp=yes
"""

TIMER = """[Unit]
Description=coophost: check the co-op every {every}

[Timer]
OnBootSec=2min
OnUnitActiveSec={every}
RandomizedDelaySec=30s
Persistent=true

[Install]
WantedBy=timers.target
"""


@notify.command("timer")
@click.option("--dir", "folder", type=click.Path(file_okay=False, path_type=Path),
              default=Path("/etc/systemd/system"), show_default=True,
              help="Where to write coophost-notify.service and .timer.")
@click.option("--every", default="5min", show_default=True,
              help="How often (a systemd time span: 5min, 1h).")
@click.option("--user", "run_as", metavar="USER", default="",
              help="Run the checks as this account (the one holding the co-op's SSH key).")
@pass_app
def notify_timer(app: AppContext, folder: Path, every: str, run_as: str) -> None:
    """Write the systemd timer that runs `coophost notify run` on this control host."""
    import re

    from coophost.fsutil import atomic_write

    if not re.fullmatch(r"[0-9]+ ?(s|sec|min|m|h|hr|d|day|w)?", every):
        raise UsageError(f"--every {every!r}: give a time span such as 5min or 1h")
    if run_as and not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", run_as):
        raise UsageError(f"--user {run_as!r}: not an account name")
    inventory = app.inventory.resolve()
    if not (inventory / "coop.yml").is_file():
        raise UsageError(f"{inventory}: no coop.yml here")
    environment = f"User={run_as}\n" if run_as else ""
    if os.environ.get("COOPHOST_VAULT_PASSWORD"):
        environment += ("# The vault password comes from coop.yml's password_file; an "
                        "environment variable\n# set in your shell does not reach the timer.\n")
    folder.mkdir(parents=True, exist_ok=True)
    service = TIMER_SERVICE.format(workdir=inventory, python=sys.executable,
                                   inventory=inventory, environment=environment)
    atomic_write(folder / "coophost-notify.service", service.encode())
    atomic_write(folder / "coophost-notify.timer", TIMER.format(every=every).encode())
    app.out.print(f"wrote {folder / 'coophost-notify.service'} and "
                  f"{folder / 'coophost-notify.timer'}")
    next_step(app, "systemctl daemon-reload && systemctl enable --now coophost-notify.timer "
              "(`coophost notify run --dry-run` shows what it would mail now)")


commands: list[click.Command] = [status, doctor, notify]
