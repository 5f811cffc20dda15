"""Rendering: the registry turned into each host's desired state, as Ansible vars. Pure.

`unit_vars` builds the variables a role gets for one (member, service) unit; `unit_hash` and
`host_hash` fingerprint them (with the versions of the roles involved) for the plan;
`render_host_file` writes a host's vars file through a Jinja2 template (StrictUndefined) in
which every registry string is tagged `!unsafe` and every secret is an inline `!vault` value.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from coophost import __version__
from coophost.registry.catalogue import Service
from coophost.registry.model import Coop, Host, Member
from coophost.registry.yamlio import quote
from coophost.secrets import SecretRef

TEMPLATE = "host_vars.yml.j2"
HTTPS_PORT = 443  # a host-wide HTTPS server (the artifact mirror) listens here
# Mapping keys that come from the registry (validated localparts) must match this to be
# rendered; it leaves no room for YAML syntax or a Jinja delimiter.
MEMBER_KEY_RE = re.compile(r"^[a-z0-9][a-z0-9._+-]*$")




class MemberKeyed(dict[str, Any]):
    """A mapping whose keys are registry strings (mailbox names): rendered quoted and !unsafe.

    Only where a role's interface needs such a mapping; elsewhere member-chosen names stay
    out of mapping keys (lists of `{name: ...}` instead).
    """


def _unit_secrets(member: Member, service: Service, settings: Mapping[str, Any]
                  ) -> dict[str, Any]:
    secrets: dict[str, Any] = {}
    rotated = member.rotated.get(service.name, {})
    for spec in service.secrets:
        if spec.kind == "per_mailbox_password":
            secrets[spec.var_name] = MemberKeyed(
                (mailbox, SecretRef(member.owner, service.name, spec.name, mailbox,
                                    generation=rotated.get(f"{spec.name}/{mailbox}", 0)))
                for mailbox in settings.get("mailboxes", ()))
        else:
            secrets[spec.var_name] = SecretRef(member.owner, service.name, spec.name,
                                               hashed=bool(spec.hash),
                                               generation=rotated.get(spec.name, 0))
    return secrets


def unit_vars(member: Member, service: Service) -> dict[str, Any]:
    """Return the variables the service's role gets for this member (one list item)."""
    settings = dict(member.services[service.name])
    if "aliases" in settings:  # member-chosen names never become mapping keys in Ansible
        settings["aliases"] = [{"name": name, "targets": targets}
                               for name, targets in sorted(settings["aliases"].items())]
    about = {"slug": member.slug, "owner": member.owner, "name": member.name,
             "contact": member.contact, "status": member.status,
             "domains": [d.ascii for d in member.domains]}
    if service.member_ssh_keys:  # only for services that use them: a new key redeploys those
        about["ssh_keys"] = list(member.ssh_keys)
    return {
        "member": about,
        "settings": settings,
        "secrets": _unit_secrets(member, service, settings),
    }


def moved_vars(member: Member, service: Service, to_name: str, to_address: str
               ) -> dict[str, Any]:
    """One item of `coophost_moved_away`: a unit that left the host, and where it went."""
    variables = unit_vars(member, service)
    return {"service": service.name, "to": {"name": to_name, "address": to_address},
            "member": variables["member"], "settings": variables["settings"]}


def _canonical(value: object) -> object:
    if isinstance(value, SecretRef):  # never rotated: hashed as before rotations existed
        if value.generation:
            return {"__secret__": value.key, "generation": value.generation}
        return {"__secret__": value.key}
    raise TypeError(f"cannot hash {type(value).__name__}")


def digest(value: object) -> str:
    """Return a content hash of plain data (with SecretRefs by name, never by value)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=_canonical)
    return hashlib.sha256(text.encode()).hexdigest()


def unit_hash(variables: Mapping[str, Any], service: Service, role_version: str) -> str:
    """Return one unit's hash: its variables, its service's definition, its role's version."""
    return digest({"vars": variables, "service": service.digest, "role": role_version})


def host_vars(host: Host, coop: Coop) -> dict[str, Any]:
    """Host-level variables (not per unit)."""
    return {"host": {"name": host.name, "fqdn": host.fqdn}, "coop": coop.as_vars()}


def host_hash(host_level: Mapping[str, Any], unit_hashes: Iterable[tuple[str, str, str]],
              role_versions: Mapping[str, str]) -> str:
    """Return a host's hash: its own vars, its units, its roles, the template."""
    return digest({"host": host_level, "units": sorted(unit_hashes), "roles": role_versions,
                   "template": template_digest()})


def host_level_hash(host_level: Mapping[str, Any], shapes: Iterable[tuple[str, str, str]],
                    role_versions: Mapping[str, str]) -> str:
    """Return a host's host-level hash: its host hash without the units' own settings.

    Its own vars, the vars template, the services placed and their role versions, and each
    unit's shape (`unit_shape`: what host-wide roles read of it). When it equals the one last
    applied, what changed on the host is only what the services' per-unit tasks apply (the
    deploy's fast path, coophost.deploy.jobs.choose_path).
    """
    return digest({"host": host_level, "shapes": sorted(shapes), "roles": role_versions,
                   "template": template_digest()})


def unit_shape(variables: Mapping[str, Any], service: Service,
               backup_paths: Iterable[str]) -> str:
    """Return what host-wide roles read of one unit: its life, vhosts, backed-up paths.

    roles/tls gets a certificate per vhost, roles/backup a job per unit with its paths and
    its life's passphrase: a unit whose shape changes (or that comes or goes) is a host-level
    change, which only the full host play applies.
    """
    vhosts = sorted(str(variables["settings"][p.name]) for p in service.parameters.values()
                    if p.type == "vhost" and variables["settings"].get(p.name))
    return digest({"owner": variables["member"]["owner"], "vhosts": vhosts,
                   "backup": sorted(backup_paths)})


def template_digest() -> str:
    """Return the hash of the vars-file template (it shapes every host's rendered state)."""
    return hashlib.sha256(_template_source().encode()).hexdigest()


def _template_source() -> str:
    return (Path(__file__).parent / "data" / TEMPLATE).read_text()


# ---- the vars file --------------------------------------------------------------------------





def yaml_scalar(value: object) -> str:
    """One scalar: strings tagged !unsafe, numbers, booleans, null."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return "!unsafe " + quote(value)
    raise TypeError(f"cannot render {type(value).__name__}")


def yaml_block(value: object, indent: int, vault: Callable[[SecretRef], str] | None = None
               ) -> str:
    """`value` as the block-style YAML that follows a `key:` (starting with a space or newline)."""
    pad = "  " * (indent + 1)
    if isinstance(value, SecretRef):
        if vault is None:
            raise TypeError("a secret needs a vault to render")
        lines = vault(value).strip().splitlines()
        return " !vault |\n" + "".join(f"{pad}{line}\n" for line in lines).rstrip("\n")
    if isinstance(value, Mapping):
        if not value:
            return " {}"
        parts = []
        for key, item in value.items():
            if isinstance(value, MemberKeyed):
                if not isinstance(key, str) or not MEMBER_KEY_RE.match(key):
                    raise TypeError(f"a registry key must be a plain name, not {key!r}")
                key = "!unsafe " + quote(key)
            elif not isinstance(key, str) or not key.isidentifier():
                raise TypeError(f"mapping keys must be identifiers, not {key!r}")
            parts.append(f"\n{pad}{key}:{yaml_block(item, indent + 1, vault)}")
        return "".join(parts)
    if isinstance(value, list | tuple):
        if not value:
            return " []"
        parts = []
        for item in value:
            body = yaml_block(item, indent + 1, vault)
            if isinstance(item, Mapping) and item:
                # the first key goes on the dash line
                body = body.replace("\n" + "  " * (indent + 2), "\n" + pad + "  ", 1)
                parts.append(f"\n{pad}-" + body[len("\n" + pad + "  ") - 1:])
            else:
                parts.append(f"\n{pad}-{body}")
        return "".join(parts)
    return " " + yaml_scalar(value)


def render_host_file(*, host: Host, coop: Coop, units: Mapping[str, list[dict[str, Any]]],
                     service_names: Iterable[str], host_hash_value: str,
                     vault: Callable[[SecretRef], str],
                     service_ports: Mapping[str, list[int]] | None = None,
                     vhost_params: Mapping[str, Iterable[str]] | None = None,
                     backup: Mapping[str, Any] | None = None,
                     moved_away: list[dict[str, Any]] | None = None,
                     service_groups: Mapping[str, str] | None = None,
                     dns_server: Mapping[str, Any] | None = None, dns_port: int = 53,
                     artifacts: list[dict[str, str]] | None = None) -> str:
    """Return the text of `host`'s Ansible vars file.

    `service_ports`: each catalogue service's TCP ports (its coophost.yml `ports`); the file
    lists those of the services placed on the host or whose group (`service_groups`: service
    -> group) the host is in, which roles/common opens.
    `vhost_params`: each service's parameters of type vhost; their values in the host's units
    are listed as `coophost_tls_vhosts`, which roles/tls gets certificates for.
    `backup`: the host's part of the backup setup (coophost.backup.render.backup_vars).
    `moved_away`: the units that left this host lately (`moved:` in member files), each with
    the host it went to: the service's role relays what still arrives here (mail).
    `dns_server`: the host's authoritative DNS setup (coophost.dns.serve.dns_server_vars), {}
    on a host outside group dns; a dns host's TCP and UDP port `dns_port` is opened.
    `artifacts`: on the co-op's artifact mirror (group artifacts), what it serves
    (coophost.artifacts.serve); None elsewhere. A mirror's HTTPS port is opened.
    """
    from jinja2 import Environment, StrictUndefined

    env = Environment(undefined=StrictUndefined, autoescape=False,  # noqa: S701 - YAML, not HTML
                      keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)
    env.filters["yaml_scalar"] = yaml_scalar
    env.filters["yaml_block"] = lambda value, indent: yaml_block(value, indent, vault)
    template = env.from_string(_template_source())
    placed = sorted(s for s in units if units[s])
    groups = service_groups or {}
    # A host in a service's group runs its role even with no unit there (to serve nothing, or
    # relay a moved unit's mail): its ports stay open.
    serving = sorted(set(placed) | {s for s, g in groups.items() if g in host.groups})
    ports = {s: sorted(set((service_ports or {}).get(s, []))) for s in serving}
    vhosts = sorted({unit["settings"][name] for s in placed for unit in units[s]
                     for name in (vhost_params or {}).get(s, ())
                     if unit["settings"].get(name)})
    backup = backup or {"server": {}, "client": {}, "units": [], "host_ports": []}
    dns_ports = [dns_port] if dns_server else []
    mirror_ports = [HTTPS_PORT] if artifacts is not None else []
    return template.render(
        version=__version__, host={"name": host.name, "fqdn": host.fqdn},
        coop=coop.as_vars(), services=placed, service_ports=ports, vhosts=vhosts,
        catalogue_services=sorted(service_names), units=units, host_hash=host_hash_value,
        backup=backup,
        host_ports=sorted(set(backup["host_ports"]) | set(dns_ports) | set(mirror_ports)),
        host_udp_ports=dns_ports, dns_server=dict(dns_server or {}),
        moved_away=moved_away or [], service_groups=sorted(set(groups.values())),
        artifacts=artifacts or [])
