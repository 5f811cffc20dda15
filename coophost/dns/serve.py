"""The co-op's own authoritative DNS: which hosts serve which zones, with which TSIG key. Pure.

Hosts of group `dns` run roles/dns (Knot DNS, DNSSEC-signed zones). The zones are coop.yml's
`dns.zones`, a sysadmin's decision: a member's file can name domains, never make the co-op
serve one. The controller changes the zones only by RFC 2136 updates signed with one TSIG key
(hmac-sha256), a co-op secret kept vault-encrypted in secrets/_coop.yml like the backup keys;
hosts get it as a `!vault` value, and nothing prints it.

The primary is the first host of the group by name; `coophost dns push` reads and updates it at
its DNS address: the host var `coophost_dns_address` when set, else its lab address
(`coophost_lab_ip`, reachable from the controller on the lab's Docker network), else its
`ansible_host`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from coophost.registry.model import DNS_GROUP, Coop, Host
from coophost.secrets import COOP_OWNER, SecretRef

__all__ = ["DNS_GROUP", "DNS_PORT", "TSIG_KEY_NAME", "dns_address", "dns_hash_input",
           "dns_server_vars", "primary", "serves_dns", "tsig_ref", "zone_of"]

DNS_PORT = 53
TSIG_KEY_NAME = "coophost-update."
TSIG_SECTION = "_dns_tsig"  # in secrets/_coop.yml
ADDRESS_VAR = "coophost_dns_address"


def tsig_ref() -> SecretRef:
    """The co-op's TSIG secret (44 base64 letters and digits: 33 bytes, about 262 bits)."""
    return SecretRef(COOP_OWNER, TSIG_SECTION, "coophost")


def serves_dns(host: Host) -> bool:
    """Whether `host` is one of the co-op's authoritative DNS hosts."""
    return DNS_GROUP in host.groups


def dns_server_vars(host: Host, coop: Coop) -> dict[str, Any]:
    """`coophost_dns_server` for one host: {zones, tsig_key_name, tsig_secret}, or {} if none."""
    if not serves_dns(host):
        return {}
    return {"zones": list(coop.dns_zones), "tsig_key_name": TSIG_KEY_NAME,
            "tsig_secret": tsig_ref()}


def dns_hash_input(host: Host, coop: Coop, role: str) -> dict[str, Any]:
    """What of the DNS setup shapes a dns host's state (zones, role version); {} elsewhere."""
    if not serves_dns(host):
        return {}
    return {"zones": list(coop.dns_zones), "key": TSIG_KEY_NAME, "role": role}


def primary(hosts: Mapping[str, Host]) -> Host | None:
    """The co-op's primary authoritative DNS host: the first of group `dns` by name."""
    found = sorted(name for name, host in hosts.items() if serves_dns(host))
    return hosts[found[0]] if found else None


def dns_address(host: Host) -> str:
    """Where the controller reaches `host`'s port 53 (see the module's docstring)."""
    variables = host.connection.vars if host.connection is not None else {}
    given = variables.get(ADDRESS_VAR)
    if isinstance(given, str) and given:
        return given
    lab = variables.get("coophost_lab_ip")
    if isinstance(lab, str) and lab:
        return lab
    return host.address


def zone_of(name: str, zones: list[str] | tuple[str, ...]) -> str | None:
    """The longest of `zones` that `name` (absolute or not) is in, or None."""
    bare = name.rstrip(".").lower()
    best = None
    for zone in zones:
        if (bare == zone or bare.endswith("." + zone)) and (best is None or len(zone) > len(best)):
            best = zone
    return best
