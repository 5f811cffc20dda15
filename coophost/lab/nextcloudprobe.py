"""The lab's Nextcloud proof: each member's instance answers over TLS from its own pool.

For every active member with a nextcloud unit on a lab host: the member's vhost is resolved
through the lab DNS (it must point at the unit's host), and the controller asks it for
coophost's preflight page over HTTPS, verified against the lab ACME root. The page must come
from the member's own PHP-FPM pool (its account `nc-<slug>`), report every PHP module Nextcloud
needs, and reach the member's own database (as its PostgreSQL role, by peer) and Redis. Without
Nextcloud's archive in the co-op's mirror (always, here) `/` must lead to the "being prepared"
page, and it must say so; with Nextcloud installed `/status.php` must answer instead.

Everything is reached on 127.0.0.1 (the lab DNS) or on the lab network (the hosts' lab
addresses); nothing else is contacted.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coophost.errors import UsageError
from coophost.lab.gitprobe import https_get, resolve
from coophost.lab.lab import Lab, LabState
from coophost.services import ProbeCheck, ProbeResult

ACCOUNT_PREFIX = "nc-"  # services/nextcloud: nextcloud_account_prefix
DATABASE_PREFIX = "nextcloud_"  # services/nextcloud/coophost.yml data.dumps
PREFLIGHT = "/coophost-preflight"
PREPARED = "/prepared.html"


@dataclass(frozen=True)
class NextcloudUnit:
    """A member's nextcloud unit on a lab host."""

    slug: str
    owner: str
    status: str
    host: str
    host_ip: str
    vhost: str

    @property
    def account(self) -> str:
        """The unit's system account and PostgreSQL role."""
        return ACCOUNT_PREFIX + self.slug

    @property
    def database(self) -> str:
        """The unit's database, named after the member life."""
        return DATABASE_PREFIX + self.owner


def nextcloud_units(root: Path, state: LabState) -> list[NextcloudUnit]:
    """Every member's nextcloud unit placed on a lab host (whatever the member's status)."""
    from coophost.desired.units import compute
    from coophost.registry.loader import load_registry

    loaded = load_registry(root)
    hosts = {h.name: h for h in state.hosts}
    found = []
    for (slug, service), unit in sorted(compute(loaded).units.items()):
        member = loaded.registry.members[slug]
        if service != "nextcloud" or unit.host not in hosts:
            continue
        found.append(NextcloudUnit(slug, member.owner, member.status, unit.host,
                                   hosts[unit.host].ip, member.services["nextcloud"]["vhost"]))
    return found


def preflight_problems(unit: NextcloudUnit, page: dict[str, Any]) -> list[str]:
    """What the preflight page `page` shows wrong for `unit` ([] when all is as it must be)."""
    problems = []
    if page.get("pool_user") != unit.account:
        problems.append(f"answered by {page.get('pool_user')!r}, not the member's pool "
                        f"({unit.account})")
    if page.get("member") != unit.slug:
        problems.append(f"the pool says it is {page.get('member')!r}'s, not {unit.slug}'s")
    missing = (page.get("modules") or {}).get("missing")
    if missing != []:
        problems.append(f"PHP modules missing: {missing}")
    database = page.get("database") or {}
    if not database.get("reachable"):
        problems.append(f"database unreachable: {database.get('error')}")
    elif (database.get("role"), database.get("current")) != (unit.account, unit.database):
        problems.append(f"connected as {database.get('role')} to {database.get('current')}, "
                        f"not {unit.account} to {unit.database}")
    redis = page.get("redis") or {}
    if not redis.get("reachable"):
        problems.append(f"Redis unreachable: {redis.get('error')}")
    if page.get("ok") is not True:
        problems.append("the page does not say ok")
    return problems


def fetch_preflight(unit: NextcloudUnit, address: str, cafile: Path
                    ) -> tuple[int, dict[str, Any] | None, str]:
    """GET the unit's preflight page: (HTTP status, its JSON or None, a short detail)."""
    status, _, body = https_get(address, unit.vhost, PREFLIGHT, cafile)
    try:
        page = json.loads(body)
    except ValueError:
        return status, None, body[:200].decode(errors="replace")
    return status, page if isinstance(page, dict) else None, ""


def prove(the_lab: Lab, timeout: float = 90.0) -> ProbeResult:
    """Check every active member's Nextcloud instance on the lab's hosts."""
    from coophost.lab.mailcheck import acme_roots, lab_state

    del timeout  # each request has its own short timeout
    state = lab_state(the_lab)
    units = [u for u in nextcloud_units(the_lab.inventory, state) if u.status == "active"]
    if not units:
        raise UsageError("no active member with a nextcloud unit on a lab host: enable "
                         "nextcloud for a member and deploy first")
    checks: list[ProbeCheck] = []

    def check(name: str, ok: bool, detail: str) -> bool:
        checks.append(ProbeCheck(name, ok, detail))
        return ok

    with tempfile.TemporaryDirectory(prefix="coophost-ncprobe-") as scratch:
        cafile = Path(scratch, "ca")
        cafile.write_text(acme_roots(the_lab, state))
        for unit in units:
            address = resolve(unit.vhost, state.dns_port)
            if not check(f"{unit.slug}: vhost in DNS", address == unit.host_ip,
                         f"{unit.vhost} -> {address or 'nothing'} (host {unit.host_ip})"):
                continue
            status, page, detail = fetch_preflight(unit, address, cafile)
            problems = (preflight_problems(unit, page) if page is not None
                        else [f"not JSON: {detail!r}"])
            if status != 200:
                problems.insert(0, f"answered {status}")
            check(f"{unit.slug}: preflight over TLS", not problems,
                  "; ".join(problems) or f"https://{unit.vhost}{PREFLIGHT}: pool {unit.account}, "
                  f"database {unit.database} and Redis reachable, every PHP module present")
            status, _, body = https_get(address, unit.vhost, "/status.php", cafile)
            if status == 200 and b'"installed":true' in body:
                check(f"{unit.slug}: Nextcloud", True, f"https://{unit.vhost}/status.php: "
                      + body[:120].decode(errors="replace"))
                continue
            status, headers, _ = https_get(address, unit.vhost, "/", cafile)
            page_status, _, page_body = https_get(address, unit.vhost, PREPARED, cafile)
            check(f"{unit.slug}: being prepared", status in (301, 302)
                  and headers.get("location", "").endswith(PREPARED) and page_status == 200
                  and b"being prepared" in page_body,
                  f"/ -> {status} {headers.get('location', '')}, {PREPARED} {page_status} "
                  "(Nextcloud's archive is not in the co-op's artifact store)")
    return ProbeResult(f"nextcloud: {len(units)} instance(s), each answered over TLS by its "
                       "own pool with its database and Redis", tuple(checks))
