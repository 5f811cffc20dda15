"""The registry's records: the co-op, its hosts and its members, as immutable values."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MEMBER_STATUSES = ("active", "suspended", "departed")


DNS_GROUP = "dns"  # the hosts serving the co-op's own zones (coophost.dns.serve)
ARTIFACTS_GROUP = "artifacts"  # the co-op's artifact mirror (coophost.artifacts.serve)

@dataclass(frozen=True)
class VaultSettings:
    """Where the ansible-vault password comes from (coop.yml `vault:`)."""

    password_file: str | None = None
    password_env: str | None = None
    create_password_file: bool = False


@dataclass(frozen=True)
class Coop:
    """coop.yml: who the co-op is and the rules every member's record is checked against."""

    name: str
    domain: str
    contacts: tuple[str, ...]
    acme_directory: str
    acme_email: str
    artifact_source: str | None
    allowances: dict[str, Any]
    retention: dict[str, int]
    vault: VaultSettings
    suspended_mail: str = "accept"  # what mail to a suspended member does: accept | bounce
    # The zones the co-op's own authoritative DNS (hosts of group `dns`) serves, in ASCII
    # (coop.yml `dns.zones`): a sysadmin's decision, never a member's. Not in `as_vars`: only
    # the dns hosts get them (coophost.dns.serve), so a new zone changes only those hosts.
    dns_zones: tuple[str, ...] = ()

    def as_vars(self) -> dict[str, Any]:
        """Return what roles may need to know about the co-op.

        Not its contacts: who is told of trouble (`coophost notify`) is no change to a host.
        """
        return {"name": self.name, "domain": self.domain,
                "acme_directory": self.acme_directory, "acme_email": self.acme_email,
                "artifact_source": self.artifact_source, "suspended_mail": self.suspended_mail}


@dataclass(frozen=True)
class HostEntry:
    """One inventory host and how to reach it over SSH (its connection facts in hosts.yml)."""

    name: str
    address: str
    port: int
    user: str
    key_file: str | None
    groups: tuple[str, ...] = ()
    vars: dict[str, Any] = field(default_factory=dict)  # group vars merged, host vars on top


@dataclass(frozen=True)
class Host:
    """One host of hosts.yml: its service groups and declared capacity."""

    name: str
    fqdn: str
    address: str
    groups: tuple[str, ...]
    capacity: dict[str, int]
    # The addresses DNS publishes for the host: its `coophost_lab_ip` when set (the lab's
    # network address), else `ansible_host` when that is a routable IP literal (not loopback,
    # link-local or unspecified: a tunnel or port forward is no public address).
    dns_addresses: tuple[str, ...] = ()
    # A hash of the host's Ansible variables from hosts.yml (group vars merged), connection
    # settings (`ansible_*`) left out: changing a role variable there is a change to deploy,
    # a new SSH port is not.
    vars_digest: str = ""
    lab_domain: str = ""  # `coophost_lab_domain`: the domain of the lab this host belongs to
    # How to reach the host (address, port, user, key file, groups, every variable), from
    # the same parse of hosts.yml; None only for a Host made by hand (tests).
    connection: HostEntry | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Domain:
    """A member domain: the form a person wrote (Unicode) and its DNS (A-label) form."""

    name: str
    ascii: str


@dataclass(frozen=True)
class Member:
    """One member file, validated, with every enabled service's settings resolved."""

    slug: str
    name: str
    contact: str
    status: str
    domains: tuple[Domain, ...]
    ssh_keys: tuple[str, ...]
    services: dict[str, dict[str, Any]]
    placement: dict[str, str]
    file: str = field(default="", compare=False)
    departed_on: str = ""  # YYYY-MM-DD, set by `member depart`
    # This member's life at the co-op (`id:` in the file, written by coophost): data on hosts
    # and secrets belong to it, so a later member given the same slug never reaches them.
    life: str = ""
    # Services moved away from a host lately: service -> {"from": host, "on": YYYY-MM-DD}.
    moved: dict[str, dict[str, str]] = field(default_factory=dict)
    # Passwords rotated (written by `secrets rotate` and the member verb `password`): service
    # -> {secret key (`mailbox_passwords/alice`): how many times}. Not secret; part of the unit
    # hash, so a rotation redeploys the unit.
    rotated: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def owner(self) -> str:
        """The owner key of this member's data and secrets: `<slug>.<life>`."""
        return f"{self.slug}.{self.life}" if self.life else self.slug

    def to_plain(self) -> dict[str, Any]:
        """Plain data (for the parse cache)."""
        return {"slug": self.slug, "name": self.name, "contact": self.contact,
                "status": self.status, "domains": [(d.name, d.ascii) for d in self.domains],
                "ssh_keys": list(self.ssh_keys), "services": self.services,
                "placement": self.placement, "file": self.file,
                "departed_on": self.departed_on, "life": self.life, "moved": self.moved,
                "rotated": self.rotated}

    @classmethod
    def from_plain(cls, data: dict[str, Any]) -> Member:
        """Rebuild a record that `to_plain` produced."""
        return cls(slug=data["slug"], name=data["name"], contact=data["contact"],
                   status=data["status"],
                   domains=tuple(Domain(n, a) for n, a in data["domains"]),
                   ssh_keys=tuple(data["ssh_keys"]), services=data["services"],
                   placement=data["placement"], file=data["file"],
                   departed_on=data.get("departed_on", ""), life=data.get("life", ""),
                   moved=data.get("moved", {}), rotated=data.get("rotated", {}))


@dataclass(frozen=True)
class Registry:
    """A whole co-op directory, loaded and cross-checked."""

    root: Path
    coop: Coop
    hosts: dict[str, Host]
    members: dict[str, Member]
