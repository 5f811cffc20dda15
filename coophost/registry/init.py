"""`coophost init DIR`: a new, valid, empty co-op directory."""

from __future__ import annotations

import secrets
from pathlib import Path

from coophost.errors import UsageError
from coophost.fsutil import atomic_write
from coophost.layout import (
    CONTROLLER_KEY_FILE,
    COOP_FILE,
    HOSTS_FILE,
    MEMBERS_DIR,
    SECRETS_DIR,
    VAULT_PASSWORD_FILE,
)
from coophost.registry import checks
from coophost.registry.catalogue import load_catalogue
from coophost.registry.parse import parse_coop, parse_hosts
from coophost.registry.yamlio import load_text, quote

COOP_TEMPLATE = """\
# {name}: the co-op's own settings. Every member file is checked against these rules.
name: {quoted_name}
domain: {domain}
contacts:
  - {contact}
acme:
  # Any ACME CA; Let's Encrypt's production directory by default.
  directory: https://acme-v02.api.letsencrypt.org/directory
  email: {contact}
allowances:
  domains: 10            # domains per member
  services: {{}}           # e.g. mail: {{mailboxes: 50, quota_mb: 10240}}
retention:
  backups_days: 30
  runs_days: 90
  departed_days: 30      # a departed member's services stay this long, then `members purge`
suspended_mail: accept   # or bounce: mail to a suspended member is refused
vault:
  # The ansible-vault password: the env variable wins, else the file (never commit it).
  password_env: COOPHOST_VAULT_PASSWORD
  password_file: {password_file}
"""

HOSTS_TEMPLATE = """\
# The co-op's hosts: a plain Ansible inventory. One group per service says which hosts may
# run it; coophost_capacity declares what placement may fill. `coophost host enrol` (or
# `coophost host add`) edits this.
all:
  vars:
    ansible_user: coophost
    ansible_become: true
    # The controller's key: `coophost host enrol` installs its public half for ansible_user.
    ansible_ssh_private_key_file: "{{{{ inventory_dir }}}}/{key_file}"
  hosts: {{}}
  children:
{groups}"""

GITIGNORE = f"""\
# coophost state and caches
.coophost/
# the vault password (keep a copy somewhere safe: without it the secrets are lost)
vault-password
# rendered by `coophost render`
host_vars/
# the controller's SSH key (keep a copy somewhere safe, as for the vault password)
{CONTROLLER_KEY_FILE}
{CONTROLLER_KEY_FILE}.pub
"""


def check_option(option: str, value: str) -> str:
    """Check one of init's values (--name, --domain, --contact) as coop.yml's load would.

    Raises ValidationError (exit 2) naming the option and the value.
    """
    where = "(command line)"
    if option == "--name":
        return checks.text(value, where, option, 100)
    if option == "--domain":
        return checks.domain(value, where, option)[0]
    if option == "--contact":
        return checks.email(value, where, option)
    raise ValueError(f"init has no option {option}")  # pragma: no cover - a caller's typo


def _controller_key(directory: Path) -> list[tuple[str, bytes, int]]:
    """A new Ed25519 key pair for the controller (none when the co-op folder has one)."""
    if (directory / CONTROLLER_KEY_FILE).exists():
        return []
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH)
    return [(CONTROLLER_KEY_FILE, private, 0o600),
            (CONTROLLER_KEY_FILE + ".pub", public + b" coophost-controller\n", 0o644)]


def init_coop(directory: Path, *, name: str, domain: str, contact: str) -> list[Path]:
    """Create a co-op: coop.yml, hosts.yml, members/, secrets/, .gitignore and its keys.

    The keys are a vault password file and the controller's SSH key pair, which
    `coophost host enrol` installs on hosts.
    """
    if (directory / COOP_FILE).exists():
        raise UsageError(f"{directory} already holds a co-op ({COOP_FILE} exists)")
    catalogue = load_catalogue()
    for option, value in (("--name", name), ("--domain", domain), ("--contact", contact)):
        check_option(option, value)
    coop_text = COOP_TEMPLATE.format(name=name.replace("\n", " "), quoted_name=quote(name),
                                     domain=domain, contact=contact,
                                     password_file=VAULT_PASSWORD_FILE)
    parse_coop(load_text(coop_text, COOP_FILE), COOP_FILE, catalogue)
    groups = sorted({service.group for service in catalogue.services.values()})
    hosts_text = HOSTS_TEMPLATE.format(
        key_file=CONTROLLER_KEY_FILE,
        groups="".join(f"    {group}: {{hosts: {{}}}}\n" for group in groups))
    parse_hosts(load_text(hosts_text, HOSTS_FILE), HOSTS_FILE, catalogue)
    created = []
    for folder in (MEMBERS_DIR, SECRETS_DIR):
        (directory / folder).mkdir(parents=True, exist_ok=True)
        created.append(directory / folder)
    files: list[tuple[str, str | bytes, int]] = [
        (COOP_FILE, coop_text, 0o644), (HOSTS_FILE, hosts_text, 0o644),
        (".gitignore", GITIGNORE, 0o644),
        (VAULT_PASSWORD_FILE, secrets.token_urlsafe(32) + "\n", 0o600),
        *_controller_key(directory)]
    for file, text, mode in files:
        path = directory / file
        if not path.exists():
            atomic_write(path, text, mode)
            created.append(path)
    return created
