"""The member shell: what a member's SSH key may run on the control host, and nothing else.

`coophost members authorize` binds each member key to `coophost -i CO-OP member-shell SLUG`
as a forced command, so the slug comes from the sysadmins' authorized_keys line, never from
what the member sends. What the member sends arrives in $SSH_ORIGINAL_COMMAND: it is split
like a POSIX shell would (no shell ever runs it), checked against size and character limits,
and parsed by a small click group holding only the member verbs. Anything else is refused
with a clear message and exit 2.
"""

from __future__ import annotations

import json
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import click

from coophost.errors import EXIT_OK, EXIT_PENDING, EXIT_USAGE, CoophostError, UsageError
from coophost.registry.loader import Loaded

MAX_COMMAND = 2048  # characters in one command
MAX_ARGS = 40
SHOWN_CLOSED = 20  # decided requests `status` shows (the newest); pending ones are all shown
VERBS = ("status", "services", "request", "cancel", "dns", "export", "backups", "password",
         "help")


def split_command(text: str) -> list[str]:
    """The member's command as words; UsageError for anything a member shell refuses."""
    if len(text) > MAX_COMMAND:
        raise UsageError(f"command too long ({len(text)} characters; at most {MAX_COMMAND})")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise UsageError("control characters are not accepted")
    try:
        words = shlex.split(text, comments=False, posix=True)
    except ValueError as exc:
        raise UsageError(f"cannot read the command: {exc}") from None
    if len(words) > MAX_ARGS:
        raise UsageError(f"too many arguments ({len(words)}; at most {MAX_ARGS})")
    return words


@dataclass
class Shell:
    """Who is speaking (the forced command's slug), where the co-op lives, and the co-op.

    `loaded` is the co-op as the command read it to find the member (without hosts.yml):
    verbs that need no more reuse it instead of reading it again.
    """

    root: Path
    slug: str
    out: IO[bytes]
    loaded: Loaded | None = None

    def say(self, text: str) -> None:
        """Write a line of text."""
        self.out.write((text + "\n").encode())

    def emit(self, data: Any) -> None:
        """Write JSON."""
        self.say(json.dumps(data, indent=2, sort_keys=True, default=str))


pass_shell = click.make_pass_decorator(Shell)


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, add_help_option=True)
def verbs() -> None:
    """Member shell: your own services at the co-op.

    Verbs: status, services, request SERVICE [--set KEY=VALUE]..., cancel ID, dns, export,
    backups, password MAILBOX.
    """


@verbs.command("help")
@click.pass_context
def help_verb(ctx: click.Context) -> None:
    """Show the verbs."""
    shell = ctx.find_object(Shell)
    assert shell is not None and ctx.parent is not None
    shell.say(verbs.get_help(ctx.parent))


@verbs.command("status")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@pass_shell
def status(shell: Shell, as_json: bool) -> None:
    """Your membership, services (where they run, deployed or pending) and requests."""
    from coophost.members.requests import load_requests, shown_state, unit_states
    from coophost.registry.loader import load_registry

    loaded = load_registry(shell.root)
    member = loaded.registry.members[shell.slug]
    units = unit_states(loaded)  # the co-op as read here, not read again
    deployed = [key for key, (_, done) in units.items() if done]
    requests = load_requests(shell.root, shell.slug, newest_closed=SHOWN_CLOSED)
    data: dict[str, Any] = {
        "member": member.slug, "name": member.name, "status": member.status,
        "domains": [d.name for d in member.domains],
        "services": {name: {"host": units.get((member.slug, name), ("", False))[0],
                            "state": "deployed" if (member.slug, name) in deployed
                            else "pending", "settings": settings}
                     for name, settings in member.services.items()},
        "requests": [{"id": r.id, "service": r.service, "state": shown_state(r, deployed),
                      "filed": r.filed, "why": r.why, "settings": r.settings}
                     for r in requests],
        "health": _health(shell),
    }
    if as_json:
        shell.emit(data)
        return
    shell.say(f"{member.name} ({member.slug}): {member.status}")
    shell.say(f"domains: {', '.join(data['domains']) or 'none'}")
    for name, info in data["services"].items():
        shell.say(f"service {name}: {info['state']} on {info['host'] or '(not placed yet)'}")
    for request in data["requests"]:
        why = f" ({request['why']})" if request["why"] else ""
        shell.say(f"request {request['id']}: {request['service']} {request['state']}{why}")
    health = data["health"]
    if not health:
        shell.say("health: not checked yet")
        return
    bad = [c for c in health if not c["ok"]]
    shell.say(f"health (checked {health[0]['checked']}): "
              + ("all ok" if not bad else f"{len(bad)} of {len(health)} checks need attention,"
                 " the co-op's sysadmins are told"))
    for check in bad:
        shell.say(f"  {check['host']}: {check['detail']}")


def _health(shell: Shell) -> list[dict[str, Any]]:
    """The co-op's last recorded checks of this member's units (`coophost status`)."""
    from coophost.health.checks import day
    from coophost.health.gather import recorded_for
    from coophost.state import StateDB

    with StateDB(shell.root) as db:
        rows = recorded_for(db, shell.slug)
    return [{"host": r["host"], "kind": r["kind"], "ok": r["ok"], "detail": r["detail"],
             "checked": day(r["checked_at"])} for r in rows]


@verbs.command("services")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@pass_shell
def services(shell: Shell, as_json: bool) -> None:
    """The services the co-op offers members, their settings and ceilings."""
    from coophost.registry.loader import load_registry

    loaded = shell.loaded or load_registry(shell.root, need_hosts=False)
    allowed = loaded.registry.coop.allowances["services"]
    offered: dict[str, dict[str, Any]] = {}
    coming = [name for name, service in loaded.catalogue.services.items()
              if not service.available and (not allowed or name in allowed)]
    for name, service in loaded.catalogue.services.items():
        if (allowed and name not in allowed) or not service.available:
            continue
        limits = allowed.get(name, {})
        offered[name] = {"description": service.description, "settings": {
            p.name: {"type": p.type, "default": p.default,
                     **({"at most": limits[p.name]} if p.name in limits else {})}
            for p in service.parameters.values()}}
    if as_json:
        shell.emit({**offered, **{name: {"description": loaded.catalogue.services[name].description,
                                         "coming": True} for name in coming}})
        return
    for name, info in offered.items():
        shell.say(f"{name}: {info['description']}")
        for key, spec in info["settings"].items():
            ceiling = f", at most {spec['at most']}" if "at most" in spec else ""
            shell.say(f"  --set {key}=...  ({spec['type']}, default {spec['default']!r}"
                      f"{ceiling})")
    if coming:
        shell.say(f"coming (not offered yet): {', '.join(coming)}")


@verbs.command("request")
@click.argument("service_name", metavar="SERVICE")
@click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE",
              help="A setting (repeatable).")
@pass_shell
def request(shell: Shell, service_name: str, assignments: tuple[str, ...]) -> None:
    """Ask for a service (or new settings of one you have); a sysadmin approves it."""
    from coophost.members.requests import file_request
    from coophost.registry import checks
    from coophost.registry.catalogue import load_catalogue
    from coophost.registry.edit import parse_setting

    checks.slug(service_name, "(request)", "service")
    service = load_catalogue().get(service_name, "(request)", "service")
    settings = dict(parse_setting(service, a) for a in assignments)
    filed = file_request(shell.root, shell.slug, service_name, settings,
                         f"member {shell.slug}", shell.loaded)
    shell.say(f"request {filed.id}: {service_name} (pending; a sysadmin decides)")


@verbs.command("cancel")
@click.argument("request_id", type=click.IntRange(1, 10**9), metavar="ID")
@pass_shell
def cancel(shell: Shell, request_id: int) -> None:
    """Withdraw one of your pending requests."""
    from coophost.members.requests import cancel_request

    cancel_request(shell.root, request_id, shell.slug, f"member {shell.slug}")
    shell.say(f"request {request_id} canceled")


@verbs.command("dns")
@click.option("--format", "output_format", type=click.Choice(["zone", "json"]),
              default="zone", show_default=True)
@pass_shell
def dns(shell: Shell, output_format: str) -> None:
    """The DNS records your domains need (publish them at your DNS provider)."""
    from coophost.dns.ops import expected_records
    from coophost.dns.records import format_json, format_zone

    found = expected_records(shell.root, shell.slug)
    if output_format == "json":
        shell.emit(format_json(found.records))
    else:
        shell.out.write(format_zone(found.records).encode())
    for note in found.notes:
        click.echo(f"note: {note}", err=True)


@verbs.command("export")
@pass_shell
def export(shell: Shell) -> None:
    """All your data as one archive (tar.gz, with MANIFEST.json and SHA256SUMS) on stdout."""
    from coophost.members.export import export_member

    export_member(shell.root, shell.slug, shell.out)


@verbs.command("backups")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@pass_shell
def backups(shell: Shell, as_json: bool) -> None:
    """Your services' backups: how many archives, the newest, and the last restore drill."""
    from coophost import fmt
    from coophost.backup.ops import member_backups

    assert shell.loaded is not None
    rows = member_backups(shell.root, shell.loaded, shell.slug)
    if as_json:
        shell.emit(rows)
        return
    for row in rows:
        drill = row["last_drill"]
        when = "" if drill is None else fmt.when(drill["at"])
        shell.say(f"{row['service']}: {row['archives']} archive(s), newest "
                  f"{row['last'] or '-'}; last drill "
                  + ("-" if drill is None else
                     f"{'ok' if drill['ok'] else 'FAILED'} on {drill['archive']} ({when})"))


@verbs.command("password")
@click.argument("mailbox")
@pass_shell
def password(shell: Shell, mailbox: str) -> None:
    """A new password for one of your mailboxes, shown once; it works after the next deploy."""
    from coophost.members.passwords import rotate

    for item in rotate(shell.root, shell.slug, mailbox, f"member {shell.slug}"):
        shell.say(f"new password for {item.rotation.login}: {item.password}")
    shell.say("It is shown only this once: keep it in your password manager. It replaces the "
              "old one when the co-op's sysadmins next deploy (until then the old one works).")


def run(root: Path, slug: str, command: str | None, out: IO[bytes] | None = None) -> int:
    """Run one member command; return the exit status. Errors go to stderr."""
    from coophost.registry import checks
    from coophost.registry.loader import skipping_others_broken_files

    stream = out if out is not None else sys.stdout.buffer
    try:
        checks.slug(slug, "(forced command)", "member")
        with skipping_others_broken_files(slug):
            return _run(root, slug, command, stream)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.ClickException as exc:
        click.echo(f"refused: {exc.format_message()}", err=True)
        return EXIT_USAGE
    except CoophostError as exc:
        if not _members_business(exc, slug):
            click.echo(MAINTENANCE, err=True)
            return EXIT_USAGE
        click.echo(f"refused: {exc}" if exc.exit_code == EXIT_USAGE else f"error: {exc}",
                   err=True)
        if exc.exit_code == EXIT_USAGE and exc.hint and getattr(exc, "member_hint", False):
            click.echo(f"hint: {exc.hint}", err=True)
        return exc.exit_code
    except Exception as exc:  # never a traceback to a member
        click.echo(f"error: internal error ({type(exc).__name__}); the sysadmins can see "
                   "the details with --debug", err=True)
        return EXIT_PENDING
    finally:
        stream.flush()


MAINTENANCE = ("error: the co-op is under maintenance (a file that is not yours needs a "
               "sysadmin's attention); please try again later")


def _members_business(exc: CoophostError, slug: str) -> bool:
    """Whether an error may be shown to the member: not about another file of the co-op.

    Errors naming a co-op file (another member's file, coop.yml, hosts.yml, state.db) would
    show what is not the member's; the member sees that the co-op is under maintenance.
    Its own member file, and its own input ("(command line)", "(request)"), are its own.
    """
    if getattr(exc, "maintenance", False):
        return False
    for one in getattr(exc, "errors", [exc]):  # a validation error may name several files
        file = getattr(one, "file", None)
        if not (file is None or file.startswith("(") or file == f"members/{slug}.yml"):
            return False
    return True


def _run(root: Path, slug: str, command: str | None, stream: IO[bytes]) -> int:
    """Parse and run one member command (errors go to the caller)."""
    from coophost.registry.loader import load_registry

    loaded = load_registry(root, need_hosts=False)
    member = loaded.registry.members.get(slug)
    if member is None:
        raise UsageError("your membership is not (or no longer) in the registry")
    words = split_command(command or "help")
    if not words:
        words = ["help"]
    if words[0] not in VERBS and words[0] not in ("-h", "--help"):
        raise UsageError(f"{words[0]!r} is not a member verb; verbs: {', '.join(VERBS)}")
    verbs.main(args=words, prog_name="member", standalone_mode=False,
               obj=Shell(root, slug, stream, loaded))
    return EXIT_OK
