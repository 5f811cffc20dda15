"""`coophost doctor`'s checks that need the outside.

Each member's DNS records as a resolver answers them, SMTP from each mail host to the others,
and the ACME directory from each host. The reach script runs on the hosts, as the health
probe does: what is checked is what the host itself reaches through its own resolver and
trust store.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from coophost.health.checks import Check
from coophost.registry.loader import Loaded
from coophost.registry.model import HostEntry

REACH = r'''
import json, smtplib, socket, sys, urllib.request

spec = json.loads(sys.argv[1])
out = {"smtp": {}, "acme": None}
for name in spec["smtp"]:
    try:
        with smtplib.SMTP(name, 25, local_hostname=spec["me"], timeout=15) as smtp:
            code, text = smtp.ehlo()
            out["smtp"][name] = ("ok: " if code == 250 else f"error: EHLO {code} ") + \
                text.decode(errors="replace").splitlines()[0][:100]
    except (OSError, smtplib.SMTPException) as exc:
        out["smtp"][name] = f"error: {exc}"
if spec.get("acme"):
    try:
        with urllib.request.urlopen(spec["acme"], timeout=15) as answer:
            data = json.loads(answer.read(65536))
        out["acme"] = "ok" if "newNonce" in data else "error: not an ACME directory"
    except Exception as exc:
        out["acme"] = f"error: {exc}"
print(json.dumps(out))
'''


def reach_checks(host: str, found: Mapping[str, Any], acme: str) -> list[Check]:
    """Checks from one host's reach results. Pure."""
    checks = []
    for target, result in sorted(found.get("smtp", {}).items()):
        good = str(result).startswith("ok")
        checks.append(Check(f"{host}/smtp-to/{target}", host, "mail between hosts", good,
                            f"SMTP from {host} to {target}: {result}",
                            "" if good else f"is port 25 of {target} open to {host}, and "
                            f"does {target} resolve on {host}?"))
    if found.get("acme") is not None:
        good = found["acme"] == "ok"
        checks.append(Check(f"{host}/acme", host, "acme", good,
                            f"ACME directory {acme} from {host}: {found['acme']}",
                            "" if good else "certificates cannot renew: check the host's "
                            "outbound HTTPS, its resolver and its trust store"))
    return checks


def reach(loaded: Loaded, hosts: Iterable[str], mail_hosts: Iterable[str]) -> list[Check]:
    """Run the reach script on every host in `hosts` (SMTP only from and to `mail_hosts`)."""
    from coophost.errors import CoophostError
    from coophost.layout import KNOWN_HOSTS_FILE
    from coophost.registry.hosts import connections
    from coophost.ssh import connect, run_argv

    registry = loaded.registry
    entries = connections(registry.hosts)
    known = loaded.root / KNOWN_HOSTS_FILE
    relays = sorted(mail_hosts)
    acme = registry.coop.acme_directory

    def one(name: str) -> list[Check]:
        entry: HostEntry = entries[name]
        targets = [registry.hosts[t].fqdn for t in relays if t != name] if name in relays else []
        spec = {"smtp": targets, "acme": acme, "me": registry.hosts[name].fqdn}
        argv = ["python3", "-c", REACH, json.dumps(spec)]
        try:
            with connect(entry, known) as client:
                status, out, err = run_argv(client, argv, timeout=120)
        except CoophostError as exc:
            return [Check(f"{name}/reachable", name, "reachable", False, exc.message)]
        if status != 0:
            return [Check(f"{name}/reach", name, "reach", False,
                          f"the reach script failed (exit {status}): {err.strip()[-200:]}")]
        return reach_checks(name, json.loads(out), acme)

    names = sorted(hosts)
    if not names:
        return []
    with ThreadPoolExecutor(max_workers=min(8, len(names))) as pool:
        return [check for found in pool.map(one, names) for check in found]


def dns_checks(loaded: Loaded, nameserver: tuple[str | None, int]) -> list[Check]:
    """Each member's records as the resolver answers them: one check per member."""
    from coophost.dns.ops import check, expected_records, resolver

    ask = resolver(*nameserver)
    checks = []
    for slug, member in sorted(loaded.registry.members.items()):
        if member.status != "active":
            continue
        records = expected_records(loaded, slug).records
        if not records:
            continue
        findings = check(records, ask)
        bad = [f for f in findings if f.status != "ok"]
        detail = (f"{slug}: all {len(findings)} DNS records answered" if not bad else
                  f"{slug}: {len(bad)} of {len(findings)} DNS records not as expected ("
                  + ", ".join(f"{f.record.name} {f.record.type} {f.status}" for f in bad[:3])
                  + (", ..." if len(bad) > 3 else "") + ")")
        checks.append(Check(f"dns/{slug}", "", "dns", not bad, detail,
                            "" if not bad else f"`coophost dns records --member {slug}` gives "
                            f"what to publish; `coophost dns check --member {slug}` compares",
                            (slug,)))
    return checks

