"""`coophost drift`: which hosts no longer hold what was last applied to them.

A check-mode run (Ansible's `--check`: nothing on the hosts or in state.db changes) of every
selected host against the registry. Only a host whose registry state is the one last applied
(nothing pending in the plan) can drift: there, any task that would change something means
the host was changed behind coophost's back. Hosts with pending changes are reported as such
and not judged; run `coophost plan` and `coophost deploy` for them.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coophost.deploy.engine import DeployOptions, Progress, deploy
from coophost.deploy.jobs import ALL_REASON, Selection
from coophost.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_PENDING, EXIT_UNREACHABLE


@dataclass(frozen=True)
class HostDrift:
    """One host's verdict: ok, drifted, pending, failed, unreachable or canceled."""

    host: str
    status: str
    changed: int
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        """Plain data for --json."""
        return {"host": self.host, "status": self.status, "changed": self.changed,
                "detail": self.detail}


def verdict(host: str, reasons: list[str], status: str, counts: dict[str, int],
            summary: str) -> HostDrift:
    """A host's drift from its check-mode outcome (pure)."""
    changed = int(counts.get("changed", 0))
    if reasons != [ALL_REASON]:
        return HostDrift(host, "pending", changed, "; ".join(reasons))
    if status != "ok":
        return HostDrift(host, status, changed, summary)
    if changed:
        return HostDrift(host, "drifted", changed,
                         f"{changed} task(s) would change what was applied")
    return HostDrift(host, "ok", 0)


def drift(root: Path, hosts: frozenset[str], progress: Progress, cancel: threading.Event,
          *, mitogen: bool = False) -> tuple[list[HostDrift], int]:
    """Check `hosts` (every host when empty); return the verdicts and the exit code.

    Exit 1 when a host drifted, 4 when one could not be reached (and none drifted), else 0.
    """
    options = DeployOptions(selection=Selection(hosts=hosts, everything=True), check=True,
                            mitogen=mitogen)
    result = deploy(root, options, progress, cancel)
    found = [verdict(h, result.jobs[h].reasons, o.status, o.counts, o.summary)
             for h, o in sorted(result.outcomes.items())]
    statuses = {f.status for f in found}
    if result.canceled or "canceled" in statuses:
        return found, EXIT_INTERRUPTED
    if "drifted" in statuses or "failed" in statuses:
        return found, EXIT_PENDING
    return found, EXIT_UNREACHABLE if "unreachable" in statuses else EXIT_OK
