"""The git service's hooks: what its coophost.yml cannot say (see coophost.services).

Loaded by the catalogue from this folder as module `coophost_service_git`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from coophost.registry import checks
from coophost.services import DefaultHooks, ProbeResult

# A branch name git accepts (`git check-ref-format --branch`), kept to a plain subset:
# components of letters, digits, `.`, `_`, `-`, separated by single `/`; no component starts
# with `.` or `-` or ends with `.lock`, no `..`.
_COMPONENT = r"[A-Za-z0-9_][A-Za-z0-9._-]*"
BRANCH_RE = re.compile(rf"^{_COMPONENT}(/{_COMPONENT})*$")


def branch_problem(name: str) -> str | None:
    """Why `name` is not a usable default branch name, or None when it is."""
    if not BRANCH_RE.match(name):
        return "not a branch name (letters, digits, . _ - and single / between parts)"
    if ".." in name or any(part.endswith((".lock", ".")) for part in name.split("/")):
        return "not a branch name (no `..`, no part ending in `.` or `.lock`)"
    if name == "HEAD":
        return "HEAD is not a branch name"
    return None


class GitHooks(DefaultHooks):
    """The default branch must be one git accepts; the lab probe pushes and clones."""

    def check_settings(self, resolved: Mapping[str, Any], file: str, where: str) -> None:
        """Refuse a default branch git would refuse."""
        branch = resolved.get("default_branch")
        if isinstance(branch, str):
            problem = branch_problem(branch)
            if problem is not None:
                checks.fail(file, f"{where}.default_branch", branch, problem,
                            hint="for example main, trunk or release/1")

    def probe(self, lab: Any, timeout: float) -> ProbeResult | None:
        """`coophost lab probe`: push over SSH, clone over HTTPS from another host, cgit."""
        from coophost.lab.gitprobe import prove

        return prove(lab, timeout)

    def verify_restored(self, root: Path) -> str:
        """`git fsck` every repository restored under `root` (a drill's extra check)."""
        import subprocess

        heads = sorted(p.parent for p in root.rglob("HEAD")
                       if (p.parent / "objects").is_dir() and (p.parent / "refs").is_dir())
        for repo in heads:
            done = subprocess.run(["git", "-c", "safe.directory=*", "fsck", "--no-progress",
                                   "--no-dangling"], cwd=repo, capture_output=True, text=True,
                                  check=False)
            if done.returncode != 0:
                lines = (done.stderr or done.stdout).strip().splitlines()
                return f"git fsck {repo.relative_to(root)}: {lines[-1] if lines else 'failed'}"
        return ""


HOOKS = GitHooks()
