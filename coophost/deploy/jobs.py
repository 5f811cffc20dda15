"""Pure: which hosts a deploy runs, and how many at once."""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from coophost.desired.plan import REMOVE, Change, Plan, diff
from coophost.desired.units import Desired
from coophost.registry.loader import Loaded
from coophost.state import Applied

ALL_REASON = "--all"  # the only reason of a host taken by --all with nothing pending
FULL, FAST = "full", "fast"  # a host job's path: the site playbook, or only the units playbook


@dataclass(frozen=True)
class Selection:
    """What the person asked to deploy (empty filters mean everything)."""

    members: frozenset[str] = frozenset()
    hosts: frozenset[str] = frozenset()
    services: frozenset[str] = frozenset()
    everything: bool = False
    resume: bool = False
    full: bool = False  # never the fast path (--full)


@dataclass
class HostJob:
    """One host's share of a deploy: the units it will run once applied."""

    host: str
    units: list[tuple[str, str, str]] = field(default_factory=list)  # (member, service, hash)
    host_hash: str = ""
    reasons: list[str] = field(default_factory=list)  # "alice/mail: change", "host: new"
    # Each unit's fingerprint (coophost.desired.settings), recorded with it once applied.
    settings: dict[tuple[str, str], str] = field(default_factory=dict)
    level: str = ""  # the host-level hash, recorded with the host hash once applied
    path: str = FULL  # FULL: playbooks/site.yml; FAST: playbooks/units.yml
    why: str = ""  # why the job takes its path (shown by plan and deploy)
    fast_services: list[str] = field(default_factory=list)  # the units playbook's services

    @property
    def unit_names(self) -> list[str]:
        """`member/service` of each unit on the host."""
        return [f"{m}/{s}" for m, s, _ in self.units]


def job_record(job: HostJob) -> dict[str, Any]:
    """What state.db records for `job`'s host once it converged, as plain JSON data."""
    return {"host_hash": job.host_hash, "units": [list(u) for u in job.units],
            "settings": [[m, s, v] for (m, s), v in sorted(job.settings.items())],
            "level": job.level, "path": job.path}


def job_from_record(host: str, data: Mapping[str, Any]) -> HostJob:
    """The HostJob `job_record` wrote (ValueError when it is not one)."""
    try:
        units = [(str(m), str(s), str(h)) for m, s, h in data["units"]]
        settings = {(str(m), str(s)): str(v) for m, s, v in data["settings"]}
        return HostJob(host, units, str(data["host_hash"]), settings=settings,
                       level=str(data["level"]), path=str(data["path"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not a host job record: {exc}") from exc


@dataclass
class RunContext:
    """The deploy run that jobs belong to, and what each host will run once it converged.

    Recorded with a Receptor job's work unit (coophost.deploy.remote.record_unit), so that
    `workers reattach` records a re-attached job's hosts in state.db as the deploy would have.
    """

    run_id: int | None = None
    jobs: dict[str, HostJob] = field(default_factory=dict)

    def for_hosts(self, hosts: Iterable[str]) -> dict[str, Any]:
        """The run and the hosts' records, for a unit record (JSON data)."""
        return {"run_id": self.run_id,
                "applied": {h: job_record(self.jobs[h]) for h in hosts if h in self.jobs}}


@dataclass
class Decision:
    """What a deploy decided before running: its host jobs, and what it must write first.

    `placements`: the units placed for the first time, by (member, service), with their host;
    the engine records them in the member files (not in check mode) before any job runs, so
    from then on those units stay where they were put.
    """

    jobs: dict[str, HostJob]
    placements: dict[tuple[str, str], str]


def plan_jobs(desired: Desired, applied: Applied, selection: Selection,
              resume_hosts: Iterable[str] = (), fast_capable: Collection[str] = ()
              ) -> Decision:
    """The host jobs a deploy must run: the desired state against what state.db applied.

    `fast_capable`: the services with per-unit tasks (tasks/units.yml); each job's path is
    `choose_path`'s.
    """
    units = {(u.host, u.member, u.service): u.hash for u in desired.units.values()}
    plan = diff(units, desired.host_hashes, applied)
    on_host: dict[str, list[tuple[str, str, str]]] = {h: [] for h in desired.hosts}
    for unit in desired.units.values():
        on_host[unit.host].append((unit.member, unit.service, unit.hash))
    placed = {h: [(m, s) for m, s, _ in units] for h, units in on_host.items()}
    chosen = select_hosts(plan, placed, selection, resume_hosts)
    jobs = {host: HostJob(host, sorted(on_host[host]), desired.host_hashes[host], reasons,
                          level=desired.host_levels[host])
            for host, reasons in chosen.items()}
    for host, job in jobs.items():
        job.path, job.why, job.fast_services = choose_path(
            plan.hosts[host].status, [c for c in plan.changes if c.host == host],
            job.level, applied.levels.get(host), fast_capable, selection)
    return Decision(jobs, {key: desired.placement.hosts[key]
                           for key in sorted(desired.placement.new)})


def choose_path(host_status: str, changes: Iterable[Change], level: str,
                applied_level: str | None, fast_capable: Collection[str],
                selection: Selection) -> tuple[str, str, list[str]]:
    """Return a host job's path, why, and (fast path) the services whose units it applies.

    The fast path (playbooks/units.yml: each changed service's checks and per-unit tasks; not
    the members role, whose input, the members on the host, is part of the units' shapes) is
    taken only when the host-level part of the host's desired state
    (render.host_level_hash: its vars, groups, inventory vars, backup, DNS and relay inputs,
    the template, its services and their role versions, each unit's life, vhosts and backed-up
    paths) is the one last applied, and every change on the host adds or changes a unit of a
    service that has per-unit tasks. A removed unit takes the full play: the services' roles
    archive what a gone unit leaves and other roles (backup) forget it, which only the full
    play does. `--full`, `--all` and `--resume` always take the full play, as does a host with
    no host-level hash recorded (applied before coophost recorded one).
    """
    changes = list(changes)
    for flag, given in (("--full", selection.full), ("--all", selection.everything),
                        ("--resume", selection.resume)):
        if given:
            return FULL, flag, []
    if host_status != "changed":
        return FULL, f"host {host_status}", []
    if applied_level is None:
        return FULL, "no host-level hash recorded yet", []
    if applied_level != level:
        return FULL, "host-level change", []
    if not changes:
        return FULL, "no unit change", []
    removed = sorted(f"{c.member}/{c.service}" for c in changes if c.action == REMOVE)
    if removed:
        return FULL, "unit removed: " + ", ".join(removed), []
    services = sorted({c.service for c in changes})
    without = [s for s in services if s not in fast_capable]
    if without:
        return FULL, "no per-unit tasks: " + ", ".join(without), []
    return FAST, "only units changed: " + ", ".join(services), services


def select_hosts(plan: Plan, placed: Mapping[str, Iterable[tuple[str, str]]],
                 selection: Selection, resume_hosts: Iterable[str] = ()) -> dict[str, list[str]]:
    """Return host -> reasons for every host the deploy must run, in name order.

    Plain deploys take the plan's changed hosts; `--all` takes every host; `--resume` takes
    the hosts that failed or were not reached last time. Filters narrow any of them: a member
    or service filter keeps the hosts where that member's or service's units change (or, with
    --all/--resume, live).
    """
    known = set(placed)
    reasons: dict[str, list[str]] = {}
    for change in plan.changes:
        reasons.setdefault(change.host, []).append(
            f"{change.member}/{change.service}: {change.action}")
    for host, host_plan in plan.hosts.items():
        if host_plan.status in ("new", "changed"):
            reasons.setdefault(host, []).insert(0, f"host: {host_plan.status}")
    if selection.everything:
        chosen = {h: reasons.get(h, [ALL_REASON]) for h in known}
    elif selection.resume:
        chosen = {h: ["--resume", *reasons.get(h, [])] for h in resume_hosts if h in known}
    else:
        chosen = {h: r for h, r in reasons.items() if h in known}
    if selection.hosts:
        chosen = {h: r for h, r in chosen.items() if h in selection.hosts}
    if selection.members or selection.services:
        changed: dict[str, set[tuple[str, str]]] = {}
        for change in plan.changes:
            changed.setdefault(change.host, set()).add((change.member, change.service))
        wide = selection.everything or selection.resume

        def wanted(host: str) -> bool:
            pairs = placed.get(host, ()) if wide else changed.get(host, ())
            return any((not selection.members or m in selection.members)
                       and (not selection.services or s in selection.services)
                       for m, s in pairs)

        chosen = {h: r for h, r in chosen.items() if wanted(h)}
    return dict(sorted(chosen.items()))


def blame(causes: Iterable[tuple[str, str]], units: Iterable[tuple[str, str, str]]
          ) -> list[tuple[str, list[str]]]:
    """Which members (and units) of a host a failure points at: [(member, its units)].

    `causes` are each failed task's (role, message and loop item); a member is named by its
    slug, its host account (`m-<slug>`) or its folder, as a word of its own. A failure in a
    service's role points at that service's unit of the member; one elsewhere (the members
    role, say) at every unit the member has on the host.
    """
    units = list(units)
    slugs = {member for member, _, _ in units}
    services = {service for _, service, _ in units}
    found: dict[str, set[str]] = {}
    for role, text in causes:
        for word in re.findall(r"[a-z0-9][a-z0-9-]*", text.lower()):
            slug = word[2:] if word.startswith("m-") and word[2:] in slugs else word
            if slug in slugs:
                found.setdefault(slug, set()).update(
                    f"{m}/{s}" for m, s, _ in units
                    if m == slug and (role not in services or s == role))
    return [(slug, sorted(found[slug])) for slug in sorted(found)]


def default_parallel(jobs: int, cores: int | None = None) -> int:
    """Hosts run at once by default: all of them up to twice the cores (jobs wait on SSH)."""
    cores = cores or os.cpu_count() or 1
    return max(1, min(jobs, 2 * cores))


def fingerprint_jobs(jobs: Mapping[str, HostJob], loaded: Loaded,
                     role_versions: Mapping[str, str]) -> None:
    """Give each job the fingerprint of each of its units (what the plan later compares)."""
    from coophost.desired.settings import encode, fingerprint

    members, services = loaded.registry.members, loaded.catalogue.services
    for job in jobs.values():
        job.settings = {(m, s): encode(fingerprint(members[m], services[s], role_versions[s]))
                        for m, s, _ in job.units if m in members and s in services}
