"""Write each host's rendered vars file (host_vars/<host>.yml), generating secrets on need.

The side-effect half of rendering: `render` builds the text, this module supplies secrets
from the vault store and writes the files atomically. Callers hold the co-op lock.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from coophost.desired.render import moved_vars, render_host_file, unit_vars
from coophost.desired.units import Desired, compute
from coophost.fsutil import atomic_write
from coophost.layout import HOST_VARS_DIR
from coophost.registry.loader import Loaded, load_registry
from coophost.secrets import SecretStore


def host_files(source: Path | Loaded, only_host: str | None = None,
               desired: Desired | None = None) -> tuple[dict[str, str], SecretStore]:
    """Return each host's vars file text (or one host's), and the store that supplied secrets.

    `source`: the co-op directory, or the co-op the command loaded (with `desired`, its
    desired state when the command computed it already).
    """
    loaded = source if isinstance(source, Loaded) else load_registry(source)
    root = loaded.root
    desired = desired or compute(loaded)
    registry = loaded.registry
    catalogue = loaded.catalogue
    if only_host is not None and only_host not in registry.hosts:
        from coophost.registry.checks import no_host

        raise no_host(only_host, registry.hosts)
    store = SecretStore(root, registry.coop.vault, catalogue)
    per_host: dict[str, dict[str, list[dict[str, Any]]]] = {h: {} for h in registry.hosts}
    for (slug, service_name), unit in sorted(desired.units.items()):
        if only_host is not None and unit.host != only_host:
            continue
        variables = unit_vars(registry.members[slug], catalogue.services[service_name])
        per_host[unit.host].setdefault(service_name, []).append(variables)
    from coophost.backup.render import backup_vars

    placed = {h: [(slug, service) for (slug, service), unit in desired.units.items()
                  if unit.host == h] for h in registry.hosts}
    backup = backup_vars(registry.hosts, registry.members, catalogue, placed, store.public_key)
    from coophost.backup.model import server_address
    from coophost.desired.units import relays_by_host

    placed_at = {key: unit.host for key, unit in desired.units.items()}
    relays = relays_by_host(((m.slug, {s: r["from"] for s, r in m.moved.items()})
                             for m in registry.members.values()), placed_at,
                            {key: "" for key in placed_at}, registry.hosts)
    from coophost.dns.serve import DNS_PORT, dns_server_vars
    from coophost.registry.model import ARTIFACTS_GROUP

    texts = {}
    for name, host in registry.hosts.items():
        if only_host is not None and name != only_host:
            continue
        texts[name] = render_host_file(
            host=host, coop=registry.coop, units=per_host[name],
            service_names=catalogue.services, host_hash_value=desired.host_hashes[name],
            vault=store.ciphertext, backup=backup[name],
            service_ports={n: [p.port for p in s.ports if p.protocol == "tcp"]
                           for n, s in catalogue.services.items()},
            vhost_params={n: [p.name for p in s.parameters.values() if p.type == "vhost"]
                          for n, s in catalogue.services.items()},
            service_groups={n: s.group for n, s in catalogue.services.items() if s.available},
            dns_server=dns_server_vars(host, registry.coop), dns_port=DNS_PORT,
            artifacts=desired.mirror if ARTIFACTS_GROUP in host.groups else None,
            moved_away=[moved_vars(registry.members[slug], catalogue.services[service], to,
                                   server_address(registry.hosts[to]))
                        for slug, service, to, _ in relays.get(name, [])])
    return texts, store


def render_hosts(source: Path | Loaded, out: Path, only_host: str | None = None,
                 desired: Desired | None = None) -> list[Path]:
    """Write host_vars/<host>.yml under `out`; new secrets are saved first. Returns the paths.

    Members must have their life ids (`registry.edit.assign_lives`, which the callers run
    first): data and secrets are keyed by them.
    """
    texts, store = host_files(source, only_host, desired)
    written = store.save()
    for name, text in texts.items():
        path = out / HOST_VARS_DIR / f"{name}.yml"
        atomic_write(path, text, 0o600)
        written.append(path)
    return written
