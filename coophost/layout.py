"""Where everything lives: the files of a co-op directory, and coophost's own Ansible content.

A co-op directory (an inventory) holds:
```
coop.yml  hosts.yml  known_hosts  audit.log
members/<slug>.yml          one file per member
secrets/<slug>.<id>.yml     vault-encrypted, one per member life; secrets/removed/ after removal
requests/open|closed/<slug>/<id>.yml
host_vars/<host>.yml        written by `coophost render` (plain ansible-playbook runs)
.coophost/                  state.db, locks, caches, rejected edits (git-ignored)
```
Every module names these through the constants here, never as literals of its own.
"""

from __future__ import annotations

from pathlib import Path

from coophost.errors import EnvironmentProblem

COOP_FILE = "coop.yml"
HOSTS_FILE = "hosts.yml"
KNOWN_HOSTS_FILE = "known_hosts"
AUDIT_LOG = "audit.log"
MEMBERS_DIR = "members"
SECRETS_DIR = "secrets"
REMOVED_DIR = "removed"  # under secrets/: the secrets of removed members, until purged
REQUESTS_DIR = "requests"
OPEN_DIR = "open"
CLOSED_DIR = "closed"
HOST_VARS_DIR = "host_vars"
STATE_DIR = ".coophost"
STATE_FILE = "state.db"  # under .coophost/
LOCK_FILE = "lock"  # under .coophost/
REQUESTS_LOCK = "requests.lock"  # members' requests: never blocked by a running deploy
VAULT_PASSWORD_FILE = "vault-password"  # noqa: S105 - a file name, not a password
CONTROLLER_KEY_FILE = "controller-key"  # the SSH key coophost reaches hosts with (git-ignored)

# coophost's own Ansible content, under content_root()
SERVICES_DIR = "services"  # services/<name>/: one member service, its role and coophost.yml
ROLES_DIR = "roles"  # host-wide roles (common, members, tls)
SERVICE_FILE = "coophost.yml"  # in a service folder: its catalogue entry
HOOKS_FILE = "hooks.py"  # in a service folder: what its data cannot say (optional)


def content_root() -> Path:
    """The folder holding playbooks/, roles/, services/ and ansible.cfg (source tree or install)."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent, here / "content"):
        if (candidate / "playbooks").is_dir() and (candidate / "ansible.cfg").is_file():
            return candidate
    raise EnvironmentProblem("coophost's playbooks and roles are missing from this install")


def roles_paths() -> list[Path]:
    """Where Ansible finds roles: the host-wide roles, then the service folders."""
    root = content_root()
    return [root / ROLES_DIR, root / SERVICES_DIR]


def playbook(name: str) -> Path:
    """The path of a shipped playbook, e.g. `site.yml`."""
    path = content_root() / "playbooks" / name
    if not path.is_file():
        raise EnvironmentProblem(f"no playbook {name} in {path.parent}")
    return path
