"""What the co-op's mirror serves: the catalogue's artifacts with a verified copy in the store.

Rendered into the vars of each host of group `artifacts` as `coophost_artifacts` (roles/artifacts
copies and serves them; tasks/get.yml on any host reads them from the mirror's vars), and part
of those hosts' hashes, so a fetch, a new version or a removed entry redeploys the mirror.
"""

from __future__ import annotations

import json
from pathlib import Path

from coophost.artifacts.catalogue import load
from coophost.artifacts.store import MANIFEST, stored_folder
from coophost.registry.model import ARTIFACTS_GROUP

__all__ = ["ARTIFACTS_GROUP", "served"]


def served(inventory: Path) -> list[dict[str, str]]:
    """The catalogue's entries whose stored copy was verified for the catalogue's SHA-256.

    The manifest is written only after both checks passed (`store.fetch`); `artifacts verify`
    re-checks the bytes, and the role checks them again on the controller and on the mirror.
    """
    items = []
    for name, artifact in sorted(load(inventory).items()):
        folder = stored_folder(inventory, artifact)
        try:
            manifest = json.loads((folder / MANIFEST).read_text())
        except (OSError, ValueError):
            continue
        if manifest.get("sha256") != artifact.sha256 or not (folder / artifact.file).is_file():
            continue
        items.append({"name": name, "version": artifact.version, "file": artifact.file,
                      "sha256": artifact.sha256,
                      "path": f"{name}/{artifact.version}/{artifact.file}"})
    return items
