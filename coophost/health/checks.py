"""Turn what the hosts and state.db say into checks, each ok or needing attention. Pure.

A check has a stable key (`h1/unit/dovecot.service`, `backup/ada-books/mail`): notifications
compare a key's state from one run to the next, so a key must name what is checked, never
its current value.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from coophost.health.probe import HostFacts

HOST_UNITS = ("ssh.service",)
SERVICE_HOST_UNITS = ("nginx.service",)  # roles/tls serves ACME challenges on every service host
BACKUP_SERVER_UNIT = "coophost-borg-sshd.service"
BACKUP_CLIENT_UNIT = "coophost-backup.timer"


@dataclass(frozen=True)
class Thresholds:
    """When a value needs attention."""

    cert_days: int = 14
    disk_free_pct: float = 10.0
    memory_available_pct: float = 5.0
    mail_queue: int = 100
    drill_days: int = 8


@dataclass
class Check:
    """One thing checked: ok, or what is wrong and what to do."""

    key: str
    host: str
    kind: str
    ok: bool
    detail: str
    advice: str = ""
    members: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """JSON shape."""
        return {"key": self.key, "host": self.host, "kind": self.kind, "ok": self.ok,
                "detail": self.detail, "advice": self.advice, "members": list(self.members)}


@dataclass
class HostPlan:
    """What should be true of one host: its units, its ports, and whose units it runs."""

    units: list[str] = field(default_factory=list)
    ports: dict[int, str] = field(default_factory=dict)  # port -> what it is for
    unit_members: dict[str, tuple[str, ...]] = field(default_factory=dict)  # unit -> members
    port_members: dict[int, tuple[str, ...]] = field(default_factory=dict)
    members: tuple[str, ...] = ()  # every member with a unit on the host


def expected(hosts: Mapping[str, Any], services: Mapping[str, Any],
             placed: Iterable[tuple[str, str, str]],
             backup_hosts: Iterable[str]) -> dict[str, HostPlan]:
    """Each host's HostPlan from hosts.yml groups, the catalogue, and placed units.

    `hosts`: name -> Host (with `groups`); `services`: name -> Service (with `group`,
    `status`, `systemd`, `ports`); `placed`: (member, service, host) of every unit.
    """
    backup = sorted(backup_hosts)
    on_host: dict[str, dict[str, set[str]]] = {}
    for member, service, host in placed:
        on_host.setdefault(host, {}).setdefault(service, set()).add(member)
    plans: dict[str, HostPlan] = {}
    for name, host in sorted(hosts.items()):
        plan = HostPlan()
        units_here = on_host.get(name, {})
        plan.members = tuple(sorted(set().union(*units_here.values()))) if units_here else ()
        offered = [s for s in services.values()
                   if s.status == "available" and s.group in host.groups]

        def add(unit: str, members: tuple[str, ...], plan: HostPlan = plan) -> None:
            if unit not in plan.units:
                plan.units.append(unit)
            plan.unit_members[unit] = tuple(sorted(set(plan.unit_members.get(unit, ()))
                                                   | set(members)))

        for unit in HOST_UNITS:
            add(unit, plan.members)
        if offered or units_here:
            for unit in SERVICE_HOST_UNITS:
                add(unit, plan.members)
        for service in offered:
            users = tuple(sorted(units_here.get(service.name, ())))
            for unit in service.systemd:
                add(unit, users)
            for port in service.ports:
                if port.protocol == "tcp":
                    plan.ports.setdefault(port.port, f"{service.name}: {port.description}")
                    plan.port_members[port.port] = tuple(sorted(
                        set(plan.port_members.get(port.port, ())) | set(users)))
        if name in backup:
            add(BACKUP_SERVER_UNIT, ())
        if backup and units_here:
            add(BACKUP_CLIENT_UNIT, plan.members)
        plans[name] = plan
    return plans


def _pct(part: float, whole: float) -> float:
    return 100.0 * part / whole if whole else 100.0


def _gib(value: float) -> str:
    return f"{value / 2**30:.1f} GiB"


def day(ts: float) -> str:
    """A time as the CLI shows it everywhere (coophost.fmt): UTC, to the minute."""
    from coophost.fmt import when

    return when(ts)


def cert_members(name: str, domains: Mapping[str, str], plan: HostPlan) -> tuple[str, ...]:
    """Whose certificate: the member owning the vhost's domain, else the host's members."""
    for domain, member in domains.items():
        if name == domain or name.endswith("." + domain):
            return (member,)
    return plan.members


def host_checks(found: HostFacts, plan: HostPlan, limits: Thresholds,
                domains: Mapping[str, str], now: float) -> list[Check]:
    """The checks of one probed host."""
    host = found.host
    if not found.reachable or found.error:
        return [Check(f"{host}/reachable", host, "reachable", False,
                      found.error or "not reachable",
                      f"`coophost host check {host}` says why; every other check of "
                      "the host waits for it", plan.members)]
    facts = found.facts
    checks = [Check(f"{host}/reachable", host, "reachable", True, "reachable, pinned key",
                    members=plan.members)]
    units = facts.get("units", {})
    for name in plan.units:
        state = units.get(name, {})
        active = state.get("active", "")
        good = active == "active"
        detail = (f"{name} is active ({state.get('sub', '')})" if good else
                  f"{name} is not installed" if state.get("load") == "not-found" else
                  f"{name} is {active or 'unknown'} ({state.get('sub', '') or '?'})")
        checks.append(Check(f"{host}/unit/{name}", host, "service", good, detail,
                            "" if good else f"on {host}: `systemctl status {name}` and "
                            f"`journalctl -u {name}` say why; `systemctl start {name}` once "
                            "fixed", plan.unit_members.get(name, ())))
    for name in facts.get("failed_units", []):
        if name not in plan.units:
            checks.append(Check(f"{host}/unit/{name}", host, "service", False,
                                f"{name} failed",
                                f"on {host}: `journalctl -u {name}`; "
                                f"`systemctl reset-failed {name}` once fixed"))
    listening = set(facts.get("listening", []))
    for port, what in sorted(plan.ports.items()):
        good = port in listening
        checks.append(Check(f"{host}/port/{port}", host, "port", good,
                            f"port {port} ({what}) " + ("listening" if good else
                                                         "has nothing listening"),
                            "" if good else f"the service behind it is down on {host}",
                            plan.port_members.get(port, ())))
    for name, end in sorted(facts.get("certificates", {}).items()):
        whose = cert_members(name, domains, plan)
        if end is None:
            checks.append(Check(f"{host}/cert/{name}", host, "certificate", False,
                                f"certificate {name} cannot be read",
                                f"on {host}: `certbot certificates`", whose))
            continue
        days = (float(end) - now) / 86400
        good = days >= limits.cert_days
        checks.append(Check(
            f"{host}/cert/{name}", host, "certificate", good,
            f"certificate {name} " + (f"expires in {days:.0f} days ({day(float(end))})"
                                      if days >= 0 else f"expired on {day(float(end))}"),
            "" if good else f"renewal is late: on {host}, `certbot renew` says why (is the "
            f"ACME directory reachable, does the name's DNS point at {host}?)", whose))
    queue = facts.get("mail_queue")
    if queue is not None:
        good = queue["total"] <= limits.mail_queue
        checks.append(Check(
            f"{host}/mail-queue", host, "mail queue", good,
            f"{queue['total']} message(s) queued, {queue['deferred']} deferred",
            "" if good else f"on {host}: `postqueue -p` lists them and why they wait",
            plan.unit_members.get("postfix.service", ())))
    disk = facts.get("disk", {})
    if disk:
        free = _pct(disk["free"], disk["total"])
        good = free >= limits.disk_free_pct
        checks.append(Check(f"{host}/disk", host, "disk", good,
                            f"{_gib(disk['free'])} free of {_gib(disk['total'])} ({free:.0f}%)",
                            "" if good else f"free space on {host}, or move units away "
                            "(`coophost member move`)"))
    memory = facts.get("memory", {})
    if memory:
        available = _pct(memory["available"], memory["total"])
        good = available >= limits.memory_available_pct
        checks.append(Check(f"{host}/memory", host, "memory", good,
                            f"{_gib(memory['available'])} available of "
                            f"{_gib(memory['total'])} ({available:.0f}%)",
                            "" if good else f"`top` on {host}; move units away if it stays"))
    return checks


def deploy_checks(last_jobs: Mapping[str, Mapping[str, Any]], hosts: Iterable[str]
                  ) -> list[Check]:
    """Each host's last deploy job (`last_jobs`: host -> run_id, status, finished_at, summary).

    For the sysadmins only: a failed job's summary may name any member's unit on the host, so
    these checks concern no member (the member shell never shows them).
    """
    checks = []
    for host in sorted(hosts):
        job = last_jobs.get(host)
        if job is None:
            checks.append(Check(f"{host}/deploy", host, "deploy", False, "never deployed",
                                f"`coophost deploy --host {host}`"))
            continue
        good = job["status"] == "ok"
        when = day(job["finished_at"]) if job.get("finished_at") else "unfinished"
        detail = f"last deploy {job['status']} (run {job['run_id']}, {when})"
        if not good and job.get("summary"):
            detail += ": " + str(job["summary"]).splitlines()[0][:200]
        checks.append(Check(f"{host}/deploy", host, "deploy", good, detail,
                            "" if good else f"`coophost runs show {job['run_id']}`, then "
                            f"`coophost deploy --host {host}` once fixed"))
    return checks


def backup_checks(rows: Iterable[Mapping[str, Any]], limits: Thresholds, max_age_hours: int,
                  now: float) -> list[Check]:
    """Each backed-up unit's last backup and last drill (rows of `backup list --json`)."""
    checks = []
    for row in rows:
        member, service, host = row["member"], row["service"], row["host"]
        unit = f"{member} {service}"
        if row.get("error"):
            good, detail = False, f"backup of {unit}: {row['error']}"
        elif row.get("age_hours") is None:
            good, detail = False, f"{unit} has no backup yet"
        else:
            good = bool(row.get("fresh"))
            detail = (f"last backup of {unit} {row['age_hours']:.0f} h ago ({row['last']})"
                      + ("" if good else f", over the {max_age_hours} h limit"))
        checks.append(Check(f"backup/{member}/{service}", host, "backup", good, detail,
                            "" if good else f"`coophost backup run --member {member}`; "
                            f"on {host}: `journalctl -u coophost-backup`", (member,)))
        drill = row.get("drill")
        if not drill:
            good, detail = False, f"{unit} was never restored in a drill"
        else:
            age = (now - float(drill["at"])) / 86400
            good = bool(drill["ok"]) and age <= limits.drill_days
            detail = (f"last drill of {unit} {'passed' if drill['ok'] else 'FAILED'} "
                      f"{age:.0f} days ago ({day(float(drill['at']))})")
            if not drill["ok"] and drill.get("detail"):
                detail += ": " + str(drill["detail"])[:200]
            elif age > limits.drill_days:
                detail += f", over the {limits.drill_days} days limit"
        checks.append(Check(f"drill/{member}/{service}", host, "drill", good, detail,
                            "" if good else f"`coophost backup drill --member {member}`",
                            (member,)))
    return checks


def artifact_checks(rows: Iterable[Mapping[str, Any]]) -> list[Check]:
    """Check each catalogue artifact: stored and verified on the controller, or what to run.

    `rows` are `coophost.artifacts.store.listing` rows. For the sysadmins only (no member).
    """
    checks = []
    for row in rows:
        name, version = str(row["name"]), str(row["version"])
        if row["stored"]:
            checks.append(Check(f"controller/artifact/{name}", "controller", "artifact", True,
                                f"{name} {version} stored, verified {row['verified_at']}"))
        else:
            checks.append(Check(f"controller/artifact/{name}", "controller", "artifact", False,
                                f"{name} {version} is in the catalogue but not in the store: "
                                "the mirror does not serve it",
                                f"`coophost artifacts fetch {name}`, then `coophost deploy`"))
    return checks


def for_member(checks: Iterable[Check], member: str) -> list[Check]:
    """The checks that concern one member's units."""
    return [c for c in checks if member in c.members]


def needs_attention(checks: Iterable[Check]) -> list[Check]:
    """The checks that are not ok."""
    return [c for c in checks if not c.ok]
