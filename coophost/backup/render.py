"""The backup part of each host's rendered vars: who pushes where, with which keys. Pure.

Keys and passphrases enter the vars as SecretRefs (rendered as !vault ciphertext); public
keys are derived from the stored private keys through the `public_key` callback.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from coophost.backup.model import (
    BORG_PORT,
    BORG_USER,
    REPO_ROOT,
    authorized_keys,
    backup_hosts,
    manifest_path,
    repo_url,
    server_address,
    unit_dumps,
    unit_paths,
)
from coophost.registry.catalogue import Catalogue
from coophost.registry.model import Host, Member
from coophost.secrets import BACKUP_SECTION, COOP_OWNER, SecretRef

PASSPHRASE = "passphrase"  # noqa: S105 - an entry name, not a secret


def client_key(host: str) -> SecretRef:
    """The SSH key service host `host` pushes its backups with."""
    return SecretRef(COOP_OWNER, "_backup_client_keys", host)


def server_host_key(host: str) -> SecretRef:
    """The host key of backup host `host`'s borg sshd (pinned by clients and the controller)."""
    return SecretRef(COOP_OWNER, "_backup_host_keys", host)


def admin_key() -> SecretRef:
    """The controller's key on every backup host: list, prune, restore, drill."""
    return SecretRef(COOP_OWNER, "_backup_admin", "controller")


def passphrase(owner: str) -> SecretRef:
    """Member life `owner`'s borg passphrase (repokey-blake2), kept in its secrets file."""
    return SecretRef(owner, BACKUP_SECTION, PASSPHRASE)


def known_host_line(address: str, public_key: str) -> str:
    """A known_hosts line for a backup host's borg sshd."""
    return f"[{address}]:{BORG_PORT} {public_key}"


def backup_vars(hosts: Mapping[str, Host], members: Mapping[str, Member],
                catalogue: Catalogue, placed: Mapping[str, list[tuple[str, str]]],
                public_key: Callable[[SecretRef], str]) -> dict[str, dict[str, Any]]:
    """Each host's backup vars: {server, client, units, host_ports} (empty when none apply).

    `placed`: host -> its units as (member slug, service). A host with units is a client of
    every backup host; a backup host serves every host that has units.
    """
    servers = backup_hosts(hosts)
    clients = sorted(h for h in hosts if placed.get(h))
    result: dict[str, dict[str, Any]] = {}
    for name in hosts:
        entry: dict[str, Any] = {"server": {}, "client": {}, "units": [], "host_ports": []}
        if name in servers:
            entry["server"] = {
                "port": BORG_PORT, "user": BORG_USER, "repo_root": REPO_ROOT,
                "host_key": server_host_key(name), "clients": clients,
                "authorized_keys": authorized_keys(
                    {c: public_key(client_key(c)) for c in clients}, public_key(admin_key())),
            }
            entry["host_ports"] = [BORG_PORT]
        if placed.get(name) and servers:
            entry["client"] = {
                "name": name, "key": client_key(name),
                "known_hosts": [known_host_line(server_address(hosts[s]),
                                                public_key(server_host_key(s)))
                                for s in servers],
            }
            for slug, service_name in sorted(placed[name]):
                member, service = members[slug], catalogue.services[service_name]
                paths = unit_paths(service, member.owner, slug, [d.ascii for d in member.domains])
                if not paths:
                    continue
                entry["units"].append({
                    "owner": member.owner, "slug": slug, "service": service_name,
                    "paths": paths, "archive": str(service.data.get("archive", "")),
                    "manifest": manifest_path(member.owner, service_name),
                    "repos": [repo_url(server_address(hosts[s]), name, member.owner)
                              for s in servers],
                    "passphrase": passphrase(member.owner),
                    "dumps": unit_dumps(service, member.owner, slug,
                                        member.services.get(service_name, {})),
                })
        result[name] = entry
    return result


def backup_hash_input(host: Host, hosts: Mapping[str, Host], has_units: Mapping[str, bool],
                      role_version: str) -> dict[str, Any]:
    """What of the backup setup enters `host`'s hash (secrets by name only)."""
    servers = backup_hosts(hosts)
    item: dict[str, Any] = {}
    if host.name in servers:
        item["clients"] = sorted(h for h, yes in has_units.items() if yes)
    if has_units.get(host.name) and servers:
        item["servers"] = [[s, server_address(hosts[s])] for s in servers]
    if item:
        item["role"] = role_version
    return item
