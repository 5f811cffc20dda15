"""What the co-op's mirror serves: the catalogue's artifacts with a verified copy in the store.

Rendered into the vars of each host of group `artifacts` as `coophost_artifacts` (roles/artifacts
copies and serves them; tasks/get.yml on any host reads them from the mirror's vars), and part
of those hosts' hashes, so a fetch, a new version or a removed entry redeploys the mirror.
"""

from __future__ import annotations

from pathlib import Path

from coophost.artifacts.catalogue import load
from coophost.artifacts.store import listing
from coophost.registry.model import ARTIFACTS_GROUP

__all__ = ["ARTIFACTS_GROUP", "served"]


def served(inventory: Path) -> list[dict[str, str]]:
    """The catalogue's entries whose stored copy was verified for the catalogue's SHA-256.

    The manifest is written only after both checks passed (`store.fetch`); `artifacts verify`
    re-checks the bytes, and the role checks them again on the controller and on the mirror.
    """
    artifacts = load(inventory)
    return [{"name": str(row["name"]), "version": str(row["version"]),
             "file": artifacts[str(row["name"])].file, "sha256": str(row["sha256"]),
             "path": f"{row['name']}/{row['version']}/{artifacts[str(row['name'])].file}"}
            for row in listing(inventory, [artifacts[n] for n in sorted(artifacts)])
            if row["stored"]]
