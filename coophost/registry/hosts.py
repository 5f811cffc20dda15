"""The connection facts of an inventory's hosts (a plain Ansible YAML inventory, hosts.yml).

hosts.yml has one reader, `registry.parse.parse_hosts`: every `Host` it returns carries its
`connection` (a HostEntry). This module hands those to code that only connects to hosts.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from coophost.registry.model import Host, HostEntry

__all__ = ["HostEntry", "connections", "load_hosts"]


def connections(hosts: Mapping[str, Host]) -> dict[str, HostEntry]:
    """The connection facts of already loaded hosts, by name (in name order)."""
    result = {}
    for name, host in sorted(hosts.items()):
        if host.connection is None:  # pragma: no cover - parse_hosts always sets one
            raise AssertionError(f"host {name} was not read from hosts.yml")
        result[name] = host.connection
    return result


def load_hosts(inventory: Path) -> list[HostEntry]:
    """Every host of `inventory/hosts.yml` with its merged connection variables.

    For commands that read nothing else of the co-op; others take `connections(hosts)` of
    the registry they loaded.
    """
    from coophost.registry.loader import load_hosts as read_hosts

    return list(connections(read_hosts(inventory)).values())
