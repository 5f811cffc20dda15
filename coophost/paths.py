"""Where coophost's Ansible content (playbooks, roles, ansible.cfg) lives."""

from __future__ import annotations

from pathlib import Path

from coophost.errors import EnvironmentProblem


def content_root() -> Path:
    """The folder holding playbooks/, roles/ and ansible.cfg (the source tree, or the install)."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent, here / "content"):
        if (candidate / "playbooks").is_dir() and (candidate / "ansible.cfg").is_file():
            return candidate
    raise EnvironmentProblem("coophost's playbooks and roles are missing from this install")


def playbook(name: str) -> Path:
    """The path of a shipped playbook, e.g. `site.yml`."""
    path = content_root() / "playbooks" / name
    if not path.is_file():
        raise EnvironmentProblem(f"no playbook {name} in {path.parent}")
    return path
