"""Mail the co-op's contacts when a check changes state, and members when a request moves on.

Each key's last mailed state is kept in state.db (`health_notice`); a key is mailed only when
its state differs from that record, and the record is written only after the mail was
handed to a mail host: a run that could not send mails the same news on the next run, and
no news is ever mailed twice. Mail goes out through the co-op's own mail: `sendmail` on a
host of group `mail` whose postfix is up, over the same pinned SSH as every other command.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

from coophost.health.checks import Check

OK, ATTENTION = "ok", "attention"
REQUEST_STATES = ("approved", "denied", "deployed")
# A request's news only moves forward: approved, then live; or denied.
RANK = {"approved": 1, "deployed": 2, "denied": 2}
# A request that moved on longer ago than this when notifications first ran is not news.
REQUEST_NEWS_DAYS = 2
SENDMAIL = "/usr/sbin/sendmail"


@dataclass
class Mail:
    """One message to send, and the notice keys (with their new state) it carries."""

    to: tuple[str, ...]
    subject: str
    body: str
    keys: dict[str, str] = field(default_factory=dict)


@dataclass
class Changes:
    """What changed since the last mailed state."""

    problems: list[Check] = field(default_factory=list)
    recovered: list[Check] = field(default_factory=list)
    quiet: dict[str, str] = field(default_factory=dict)  # keys to record without a mail


def changes(checks: Iterable[Check], mailed: Mapping[str, str]) -> Changes:
    """Compare checks with the last mailed state of each key. Pure.

    A failing check whose key was never mailed is news; a passing one is recorded quietly
    (a new host or unit that is fine is not worth a mail).
    """
    found = Changes()
    for check in checks:
        state = OK if check.ok else ATTENTION
        before = mailed.get(check.key)
        if state == before:
            continue
        if state == ATTENTION:
            found.problems.append(check)
        elif before == ATTENTION:
            found.recovered.append(check)
        else:
            found.quiet[check.key] = state
    return found


def contact_mail(coop_name: str, contacts: Sequence[str], found: Changes) -> Mail | None:
    """One message to the co-op's contacts about every change of this run. Pure."""
    if not found.problems and not found.recovered:
        return None
    parts = []
    if found.problems:
        parts.append(f"{len(found.problems)} need{'s' if len(found.problems) == 1 else ''} "
                     "attention")
    if found.recovered:
        parts.append(f"{len(found.recovered)} recovered")
    first = (found.problems or found.recovered)[0]
    subject = f"[coophost] {coop_name}: {', '.join(parts)}: {first.detail[:80]}"
    lines = [f"coophost's checks of {coop_name} found a change.", ""]
    if found.problems:
        lines.append("Needs attention:")
        for check in found.problems:
            lines.append(f"  - {check.host or 'co-op'}: {check.detail}")
            if check.advice:
                lines.append(f"    what to do: {check.advice}")
        lines.append("")
    if found.recovered:
        lines.append("Recovered (nothing to do):")
        lines += [f"  - {check.host or 'co-op'}: {check.detail}" for check in found.recovered]
        lines.append("")
    lines += ["`coophost status` shows every check. You get one mail per change: nothing",
              "more is sent about these until their state changes again."]
    keys = {c.key: ATTENTION for c in found.problems} | {c.key: OK for c in found.recovered}
    return Mail(tuple(contacts), subject, "\n".join(lines) + "\n", keys)


REQUEST_TEXT = {
    "approved": ("approved", "A sysadmin approved it; it goes live with the next deploy. "
                 "You get another mail when it is live."),
    "denied": ("denied", "A sysadmin declined it{why}. Ask the co-op if you want to talk "
               "it over, or file a new request."),
    "deployed": ("live", "It is deployed and running. `status` and `services` in your "
                 "member shell show where; `dns` gives the records to publish."),
}


def request_mails(requests: Iterable[Any], shown: Mapping[int, str],
                  contacts: Mapping[str, str], mailed: Mapping[str, str], coop_name: str,
                  now: float) -> tuple[list[Mail], dict[str, str]]:
    """A mail to the member for each request whose shown state is news. Pure.

    `shown`: request id -> approved, denied or deployed; `contacts`: member -> address.
    Returns the mails and the keys to record without one (old news on a first run).
    """
    mails, quiet = [], {}
    for request in requests:
        state = shown.get(request.id)
        key = f"request/{request.id}"
        if state not in REQUEST_STATES or RANK[state] <= RANK.get(mailed.get(key, ""), 0):
            continue  # not news, or older news (a live unit pending again after a change)
        moved = _last_at(request)
        if key not in mailed and moved is not None and now - moved > REQUEST_NEWS_DAYS * 86400:
            quiet[key] = state
            continue
        address = contacts.get(request.member)
        if not address:
            quiet[key] = state
            continue
        word, text = REQUEST_TEXT[state]
        why = f": {request.why}" if state == "denied" and request.why else ""
        body = (f"Hello,\n\nyour request {request.id} for the {request.service} service at "
                f"{coop_name} is {word}.\n\n{text.format(why=why)}\n\n-- coophost, for "
                f"{coop_name}\n")
        mails.append(Mail((address,), f"[{coop_name}] request {request.id} "
                          f"({request.service}) {word}", body, {key: state}))
    return mails, quiet


def _last_at(request: Any) -> float | None:
    for entry in reversed(request.history or []):
        try:
            return dt.datetime.fromisoformat(str(entry.get("at", ""))).timestamp()
        except ValueError:
            continue
    return None


def message(mail: Mail, sender: str) -> bytes:
    """The RFC 5322 message of a Mail. Pure but for its date and id."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = ", ".join(mail.to)
    msg["Subject"] = mail.subject.replace("\n", " ")
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain=sender.rsplit("@", 1)[-1])
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(mail.body)
    return msg.as_bytes()


def mailed_states(db: Any) -> dict[str, str]:
    """Each key's last mailed (or quietly recorded) state."""
    return dict(db.conn.execute("SELECT key, state FROM health_notice"))


def remember(db: Any, keys: Mapping[str, str]) -> None:
    """Record states as mailed."""
    now = time.time()
    with db.transaction() as conn:
        conn.executemany("INSERT OR REPLACE INTO health_notice (key, state, mailed_at) "
                         "VALUES (?, ?, ?)", [(k, s, now) for k, s in keys.items()])


def send(entry: Any, known_hosts: Any, sender: str, mail: Mail) -> None:
    """Hand one message to `sendmail` on a mail host (raises CoophostError when it fails)."""
    import shlex

    from coophost.errors import ExternalCommandError
    from coophost.ssh import connect

    argv = [SENDMAIL, "-i", "-f", sender, "--", *mail.to]
    with connect(entry, known_hosts) as client:
        stdin, stdout, stderr = client.exec_command(shlex.join(argv), timeout=60)
        stdin.write(message(mail, sender))
        stdin.channel.shutdown_write()
        status = stdout.channel.recv_exit_status()
        if status != 0:
            err = stderr.read().decode(errors="replace").strip()[-300:]
            raise ExternalCommandError(f"{entry.name}: sendmail exited {status}: {err}")
