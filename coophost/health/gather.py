"""Run every check of the co-op: probe the hosts, read state.db, list the backups."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from coophost.health.checks import (
    Check,
    Thresholds,
    backup_checks,
    deploy_checks,
    expected,
    host_checks,
)
from coophost.registry.loader import Loaded


@dataclass
class Report:
    """Every check of one run, and when it ran."""

    checks: list[Check]
    at: float
    hosts: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """1 when anything needs attention."""
        return 0 if all(c.ok for c in self.checks) else 1


def last_jobs(db: Any) -> dict[str, dict[str, Any]]:
    """Each host's most recent finished deploy job (host -> run_id, status, finished_at...)."""
    rows = db.conn.execute(
        "SELECT host, run_id, status, finished_at, summary FROM host_job "
        "WHERE status IN ('ok', 'failed', 'unreachable') AND (host, run_id) IN "
        "(SELECT host, MAX(run_id) FROM host_job "
        " WHERE status IN ('ok', 'failed', 'unreachable') GROUP BY host)").fetchall()
    return {host: {"run_id": run, "status": status, "finished_at": at, "summary": summary}
            for host, run, status, at, summary in rows}


def run_checks(loaded: Loaded, limits: Thresholds, *, hosts: Iterable[str] = (),
               member: str | None = None, backups: bool = True) -> Report:
    """Probe the hosts (those of `hosts`, those of `member`'s units, or all) and check them."""
    from coophost.backup.model import backup_hosts
    from coophost.desired.units import compute
    from coophost.health.probe import probe_hosts
    from coophost.layout import KNOWN_HOSTS_FILE
    from coophost.registry.hosts import connections
    from coophost.state import StateDB

    registry = loaded.registry
    now = time.time()
    placed = [(slug, service, unit.host)
              for (slug, service), unit in compute(loaded).units.items()]
    servers = backup_hosts(registry.hosts)
    plans = expected(registry.hosts, loaded.catalogue.services, placed, servers)
    chosen = set(hosts) or set(plans)
    if member:
        chosen &= {host for slug, _service, host in placed if slug == member}
    domains = {d.name: m.slug for m in registry.members.values() for d in m.domains}
    entries = connections(registry.hosts)
    found = probe_hosts(entries, loaded.root / KNOWN_HOSTS_FILE,
                        {h: plans[h].units for h in sorted(chosen)})
    checks: list[Check] = []
    for host in sorted(chosen):
        checks += host_checks(found[host], plans[host], limits, domains, now)
    with StateDB(loaded.root) as db:
        jobs = last_jobs(db)
    checks += deploy_checks(jobs, sorted(chosen))
    if backups and servers:
        from coophost.backup.ops import listing, max_age_hours

        rows, _code = listing(loaded, member)
        rows = [r for r in rows if r["host"] in chosen]
        checks += backup_checks(rows, limits, max_age_hours(loaded), now)
    if not member and not hosts:
        from coophost.artifacts import catalogue, store
        from coophost.health.checks import artifact_checks

        artifacts = catalogue.select(catalogue.load(loaded.root), ())
        checks += artifact_checks(store.listing(loaded.root, artifacts))
    if member:
        checks = [c for c in checks if member in c.members]
    return Report(checks, now, sorted(chosen))


def record(db: Any, report: Report, *, scope_hosts: Iterable[str] = ()) -> None:
    """Keep the latest result of each check (what the member shell's `status` reads).

    A check of a host in the run's scope that did not come back this time (a unit removed)
    is dropped; checks of other hosts stay as last seen.
    """
    scope = set(scope_hosts)
    keys = {c.key for c in report.checks}
    with db.transaction() as conn:
        stale = [key for key, host in conn.execute("SELECT key, host FROM health_check")
                 if host in scope and key not in keys]
        conn.executemany("DELETE FROM health_check WHERE key = ?", [(k,) for k in stale])
        conn.executemany(
            "INSERT OR REPLACE INTO health_check (key, host, kind, ok, detail, members, "
            "checked_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(c.key, c.host, c.kind, int(c.ok), c.detail, json.dumps(list(c.members)),
              report.at) for c in report.checks])


def recorded_for(db: Any, member: str) -> list[dict[str, Any]]:
    """The last recorded checks that concern `member` (for the member shell)."""
    rows = db.conn.execute("SELECT key, host, kind, ok, detail, members, checked_at "
                           "FROM health_check ORDER BY key").fetchall()
    return [{"key": key, "host": host, "kind": kind, "ok": bool(ok), "detail": detail,
             "checked_at": at}
            for key, host, kind, ok, detail, members, at in rows
            if member in json.loads(members)]
