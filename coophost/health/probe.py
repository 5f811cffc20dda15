"""Facts gathered on each host by one fixed Python script over SSH (pinned host keys).

The script reads only its JSON argument, which names systemd units from the catalogue and
coophost's own roles (never member input). It reports each unit's state, the TCP ports
listened on, every ACME certificate's end date, the mail queue, disk and memory.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coophost.registry.model import HostEntry

# Runs on the host as `python3 -c PROBE SPEC` (as root, or through `sudo -n`).
PROBE = r'''
import calendar, glob, json, os, shutil, subprocess, sys, time

spec = json.loads(sys.argv[1])
facts = {"now": time.time()}


def run(argv):
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=20)
        return done.returncode, done.stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        return -1, str(exc)


units = {}
for name in spec["units"]:
    rc, text = run(["systemctl", "show", name, "--property=LoadState,ActiveState,SubState"])
    props = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    units[name] = {"load": props.get("LoadState", ""), "active": props.get("ActiveState", ""),
                   "sub": props.get("SubState", "")}
facts["units"] = units
rc, text = run(["systemctl", "list-units", "--state=failed", "--plain", "--no-legend",
                "--no-pager", "coophost-*"])
facts["failed_units"] = sorted(line.split()[0] for line in text.splitlines() if line.split())

ports = set()
for table in ("/proc/net/tcp", "/proc/net/tcp6"):
    try:
        with open(table) as handle:
            next(handle)
            for line in handle:
                cols = line.split()
                if len(cols) > 3 and cols[3] == "0A":
                    ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    except OSError:
        pass
facts["listening"] = sorted(ports)

certs = {}
for path in sorted(glob.glob("/etc/letsencrypt/live/*/cert.pem")):
    rc, text = run(["openssl", "x509", "-noout", "-enddate", "-in", path])
    name = os.path.basename(os.path.dirname(path))
    try:
        certs[name] = calendar.timegm(
            time.strptime(text.strip().split("=", 1)[1], "%b %d %H:%M:%S %Y %Z"))
    except (IndexError, ValueError):
        certs[name] = None
facts["certificates"] = certs

if shutil.which("postqueue"):
    rc, text = run(["postqueue", "-j"])
    items = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    facts["mail_queue"] = {"total": len(items),
                           "deferred": sum(1 for i in items if i.get("queue_name") == "deferred")}

disk = os.statvfs("/")
facts["disk"] = {"total": disk.f_blocks * disk.f_frsize, "free": disk.f_bavail * disk.f_frsize}
mem = {}
with open("/proc/meminfo") as handle:
    for line in handle:
        key, _, rest = line.partition(":")
        if key in ("MemTotal", "MemAvailable"):
            mem[key] = int(rest.split()[0]) * 1024
facts["memory"] = {"total": mem.get("MemTotal", 0), "available": mem.get("MemAvailable", 0)}
print(json.dumps(facts))
'''


@dataclass
class HostFacts:
    """What the probe found on one host, or why it could not run."""

    host: str
    reachable: bool = False
    error: str = ""
    facts: dict[str, Any] = field(default_factory=dict)


def probe_host(entry: HostEntry, known_hosts: Path, units: list[str]) -> HostFacts:
    """Run the probe on one host; an unreachable host or a changed key is a finding."""
    from coophost.errors import CoophostError
    from coophost.ssh import connect, run_argv

    found = HostFacts(entry.name)
    argv = ["python3", "-c", PROBE, json.dumps({"units": units})]
    if entry.user != "root":
        argv = ["sudo", "-n", *argv]
    try:
        with connect(entry, known_hosts) as client:
            found.reachable = True
            status, out, err = run_argv(client, argv, timeout=60)
    except CoophostError as exc:
        found.error = exc.message
        return found
    except OSError as exc:  # a connection dropped half-way
        found.error = f"{type(exc).__name__}: {exc}"
        return found
    if status != 0:
        found.error = f"the health probe failed (exit {status}): {err.strip()[-300:]}"
        return found
    try:
        found.facts = json.loads(out)
    except ValueError:
        found.error = "the health probe printed no JSON"
    return found


def probe_hosts(entries: Mapping[str, HostEntry], known_hosts: Path,
                units: Mapping[str, list[str]]) -> dict[str, HostFacts]:
    """Probe every host of `units` (host -> its units to check) concurrently."""
    names = sorted(units)
    if not names:
        return {}
    with ThreadPoolExecutor(max_workers=min(8, len(names))) as pool:
        results = pool.map(lambda n: probe_host(entries[n], known_hosts, units[n]), names)
        return {found.host: found for found in results}
