"""Pure parsing and validation of coop.yml, hosts.yml and member files into registry records."""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from coophost.registry import checks
from coophost.registry.catalogue import Catalogue, Parameter, Service
from coophost.registry.model import (
    MEMBER_STATUSES,
    Coop,
    Domain,
    Host,
    HostEntry,
    Member,
    Registry,
    VaultSettings,
)

COOP_KEYS = ("name", "domain", "contacts", "acme", "artifacts", "allowances", "retention",
             "vault", "suspended_mail")
SUSPENDED_MAIL = ("accept", "bounce")
MEMBER_KEYS = ("slug", "id", "name", "contact", "status", "domains", "ssh_keys", "services",
               "placement", "moved", "departed_on", "rotated")
ROTATED_KEY_RE = re.compile(r"^[a-z][a-z0-9_]*(/[a-z0-9][a-z0-9._+-]*)?$")
LIFE_RE = re.compile(r"[0-9a-f]{12}")
CAPACITY_KEYS = ("ram_mb", "disk_gb")
MAX_DOMAINS = 100
MAX_CAPACITY = 1 << 30  # MB of RAM or GB of disk one host declares (about an exabyte)
MAX_LIMIT = 10**9  # any per-service ceiling in allowances
DEPARTURES = ("2000-01-01", "2999-12-31")  # departure dates (ISO strings compare as dates)
DEFAULT_OPEN_REQUESTS = 10  # pending requests one member may have (allowances.open_requests)
MAX_OPEN_REQUESTS = 1000


def parse_coop(data: object, file: str, catalogue: Catalogue) -> Coop:
    """Check coop.yml's content."""
    top = checks.mapping(data, file, "")
    checks.refuse_unknown_keys(top, COOP_KEYS, file, "")
    name = checks.text(top.get("name"), file, "name", 100)
    domain, _ = checks.domain(top.get("domain"), file, "domain")
    contacts = tuple(checks.email(c, file, f"contacts[{i}]")
                     for i, c in enumerate(checks.sequence(top.get("contacts"), file,
                                                           "contacts", 20)))
    if not contacts:
        checks.fail(file, "contacts", [], "needs at least one contact address")
    acme = checks.mapping(top.get("acme"), file, "acme")
    checks.refuse_unknown_keys(acme, ("directory", "email"), file, "acme")
    artifacts = checks.mapping(top.get("artifacts"), file, "artifacts")
    checks.refuse_unknown_keys(artifacts, ("source",), file, "artifacts")
    source = artifacts.get("source")
    if source is not None:
        checks.text(source, file, "artifacts.source", 500)
    return Coop(
        name=name, domain=domain, contacts=contacts,
        acme_directory=checks.url(acme.get("directory",
                                           "https://acme-v02.api.letsencrypt.org/directory"),
                                  file, "acme.directory"),
        acme_email=checks.email(acme.get("email", contacts[0]), file, "acme.email"),
        artifact_source=source,
        allowances=_allowances(top.get("allowances"), file, catalogue),
        retention={key: checks.integer(value, file, f"retention.{key}", 0, 36500)
                   for key, value in checks.mapping(top.get("retention"), file,
                                                    "retention").items()},
        vault=_vault(top.get("vault"), file),
        suspended_mail=_choice(top.get("suspended_mail", "accept"), SUSPENDED_MAIL, file,
                               "suspended_mail"),
    )


def _choice(value: object, choices: tuple[str, ...], file: str, field: str) -> str:
    if value not in choices:
        checks.fail(file, field, value, f"must be one of {', '.join(choices)}")
    return str(value)


def _allowances(data: object, file: str, catalogue: Catalogue) -> dict[str, Any]:
    allowances = checks.mapping(data, file, "allowances")
    checks.refuse_unknown_keys(allowances, ("domains", "services", "open_requests"), file,
                               "allowances")
    result: dict[str, Any] = {"domains": checks.integer(allowances.get("domains", 10), file,
                                                         "allowances.domains", 0, MAX_DOMAINS),
                              "open_requests": checks.integer(
                                  allowances.get("open_requests", DEFAULT_OPEN_REQUESTS), file,
                                  "allowances.open_requests", 0, MAX_OPEN_REQUESTS)}
    per_service = checks.mapping(allowances.get("services"), file, "allowances.services")
    checks.refuse_unknown_keys(per_service, catalogue.services, file, "allowances.services")
    result["services"] = {}
    for service_name, limits in per_service.items():
        where = f"allowances.services.{service_name}"
        limits = checks.mapping(limits, file, where)
        service = catalogue.services[service_name]
        limited = [p.name for p in service.parameters.values()
                   if p.type in ("int", "localparts", "aliases", "member_domains")]
        checks.refuse_unknown_keys(limits, limited, file, where)
        result["services"][service_name] = {
            key: checks.integer(value, file, f"{where}.{key}", 0, MAX_LIMIT)
            for key, value in limits.items()}
    return result


def _vault(data: object, file: str) -> VaultSettings:
    vault = checks.mapping(data, file, "vault")
    checks.refuse_unknown_keys(vault, ("password_file", "password_env", "create_password_file"),
                               file, "vault")
    password_file = vault.get("password_file")
    password_env = vault.get("password_env")
    if password_file is not None:
        checks.text(password_file, file, "vault.password_file", 500)
    if password_env is not None and (not isinstance(password_env, str)
                                     or not password_env.isidentifier()):
        checks.fail(file, "vault.password_env", password_env, "must be an environment "
                    "variable name")
    if password_file is None and password_env is None:
        checks.fail(file, "vault", vault, "name a password_file or a password_env")
    create = checks.boolean(vault.get("create_password_file", False), file,
                            "vault.create_password_file")
    return VaultSettings(password_file=password_file, password_env=password_env,
                         create_password_file=create)


def parse_hosts(data: object, file: str, catalogue: Catalogue) -> dict[str, Host]:
    """Check hosts.yml (a plain Ansible inventory): every host with its groups and capacity.

    The one reader of hosts.yml: each Host also carries its connection facts (`connection`:
    address, port, user, key file, groups and merged variables), for SSH and ansible-runner.
    A host's own variables override its groups' and a group's override those of the groups
    walked before it (`all` first, then its children in order), as Ansible's child groups do.
    """
    top = checks.mapping(data, file, "")
    if "all" not in top:
        checks.fail(file, "all", None, "an Ansible YAML inventory starts with `all:`")
    raw_hosts: dict[str, dict[str, dict[str, Any]]] = {}
    groups: dict[str, set[str]] = {}
    _walk_group("all", top["all"], {}, raw_hosts, groups, file, "all")
    service_groups = {service.group for service in catalogue.services.values()}
    hosts: dict[str, Host] = {}
    for name, layers in raw_hosts.items():
        hvars = {**layers["group"], **layers["host"]}
        where = f"hosts.{name}"
        checks.host_name(name, file, where)
        member_of = tuple(sorted(groups.get(name, set()) - {"all"}))
        port = 22
        if "ansible_port" in hvars:
            port = checks.integer(hvars["ansible_port"], file, f"{where}.ansible_port", 1, 65535)
        key_file = hvars.get("ansible_ssh_private_key_file")
        capacity = _capacity(hvars.get("coophost_capacity"), file,
                             f"{where}.coophost_capacity",
                             required=bool(service_groups.intersection(member_of)))
        fqdn = hvars.get("coophost_fqdn", name)
        if "." in str(fqdn):
            fqdn, _ = checks.domain(fqdn, file, f"{where}.coophost_fqdn")
        lab_domain = hvars.get("coophost_lab_domain")
        if lab_domain is not None:
            lab_domain, _ = checks.domain(lab_domain, file, f"{where}.coophost_lab_domain")
        hosts[name] = Host(name=name, fqdn=str(fqdn),
                           address=str(hvars.get("ansible_host", name)),
                           groups=member_of, capacity=capacity,
                           dns_addresses=_dns_addresses(hvars, file, where),
                           vars_digest=_vars_digest(hvars), lab_domain=lab_domain or "",
                           connection=HostEntry(
                               name=name, address=str(hvars.get("ansible_host", name)),
                               port=port, user=str(hvars.get("ansible_user", "root")),
                               key_file=key_file if isinstance(key_file, str) else None,
                               groups=member_of, vars=hvars))
    return dict(sorted(hosts.items()))


def _vars_digest(hvars: dict[str, Any]) -> str:
    """Hash the host's variables other than connection settings (`ansible_*`)."""
    import hashlib
    import json

    kept = {k: v for k, v in hvars.items() if not str(k).startswith("ansible_")}
    text = json.dumps(kept, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _dns_addresses(hvars: dict[str, Any], file: str, where: str) -> tuple[str, ...]:
    """Return the host's addresses for DNS.

    Its `coophost_lab_ip` (must be an IP), else a routable `ansible_host` IP literal, else none.
    """
    import ipaddress

    lab_ip = hvars.get("coophost_lab_ip")
    if lab_ip is not None:
        try:
            return (str(ipaddress.ip_address(str(lab_ip))),)
        except ValueError:
            checks.fail(file, f"{where}.coophost_lab_ip", lab_ip, "must be an IP address")
    try:
        address = ipaddress.ip_address(str(hvars.get("ansible_host", "")))
    except ValueError:
        return ()
    if address.is_loopback or address.is_link_local or address.is_unspecified:
        return ()
    return (str(address),)


def _capacity(value: object, file: str, where: str, required: bool) -> dict[str, int]:
    if value is None:
        if required:
            checks.fail(file, where, None, "a host in a service group must declare its "
                        "capacity", hint="coophost_capacity: {ram_mb: 4096, disk_gb: 40}")
        return {"ram_mb": 0, "disk_gb": 0}
    capacity = checks.mapping(value, file, where)
    checks.refuse_unknown_keys(capacity, CAPACITY_KEYS, file, where)
    return {key: checks.integer(capacity.get(key), file, f"{where}.{key}", 0, MAX_CAPACITY)
            for key in CAPACITY_KEYS}


def _walk_group(group: str, node: object, inherited: dict[str, Any],
                hosts: dict[str, dict[str, dict[str, Any]]], groups: dict[str, set[str]],
                file: str, where: str) -> None:
    """Collect each host's group variables and own variables (kept apart), and its groups."""
    spec = checks.mapping(node, file, where)
    checks.refuse_unknown_keys(spec, ("hosts", "vars", "children"), file, where)
    merged = {**inherited, **checks.mapping(spec.get("vars"), file, f"{where}.vars")}
    for name, hvars in checks.mapping(spec.get("hosts"), file, f"{where}.hosts").items():
        entry = hosts.setdefault(name, {"group": {}, "host": {}})
        entry["group"].update(merged)
        entry["host"].update(checks.mapping(hvars, file, f"{where}.hosts.{name}"))
        groups.setdefault(name, set()).add(group)
    for child, sub in checks.mapping(spec.get("children"), file, f"{where}.children").items():
        _walk_group(child, sub, merged, hosts, groups, file, f"{where}.children.{child}")


def parse_member(data: object, file: str, expected_slug: str, coop: Coop,
                 catalogue: Catalogue) -> Member:
    """Check one member file's content and resolve its services' settings."""
    top = checks.mapping(data, file, "")
    checks.refuse_unknown_keys(top, MEMBER_KEYS, file, "")
    slug = checks.slug(top.get("slug"), file, "slug")
    if slug != expected_slug:
        checks.fail(file, "slug", slug, f"must match the file name ({expected_slug}.yml)")
    status = top.get("status", "active")
    if status not in MEMBER_STATUSES:
        checks.fail(file, "status", status, f"must be one of {', '.join(MEMBER_STATUSES)}")
    max_domains = coop.allowances["domains"]
    domains: list[Domain] = []
    for index, value in enumerate(checks.sequence(top.get("domains"), file, "domains",
                                                  MAX_DOMAINS)):
        name, ascii_form = checks.domain(value, file, f"domains[{index}]")
        if any(d.ascii == ascii_form for d in domains):
            checks.fail(file, f"domains[{index}]", value, "listed twice")
        domains.append(Domain(name, ascii_form))
    if len(domains) > max_domains:
        checks.fail(file, "domains", f"{len(domains)} domains",
                    f"the co-op allows at most {max_domains}")
    member = Member(
        slug=slug, name=checks.text(top.get("name"), file, "name", 200),
        contact=checks.email(top.get("contact"), file, "contact"), status=str(status),
        domains=tuple(domains),
        ssh_keys=tuple(checks.ssh_public_key(k, file, f"ssh_keys[{i}]")
                       for i, k in enumerate(checks.sequence(top.get("ssh_keys"), file,
                                                             "ssh_keys", 50))),
        services={}, placement={}, file=file,
        departed_on=_departed_on(top.get("departed_on"), status, file),
        life=_life(top.get("id"), file))
    services = checks.mapping(top.get("services"), file, "services")
    checks.refuse_unknown_keys(services, catalogue.services, file, "services")
    for name, settings in services.items():
        catalogue.refuse_coming(name, file, f"services.{name}")
        service = catalogue.services[name]
        member.services[name] = resolve_settings(service, settings, member, coop, file)
    placement = checks.mapping(top.get("placement"), file, "placement")
    for name, host in placement.items():
        if name not in member.services:
            checks.fail(file, f"placement.{name}", host, "placement of a service that is not "
                        "enabled", hint=f"enabled: {', '.join(member.services) or 'none'}")
        member.placement[name] = checks.host_name(host, file, f"placement.{name}")
    member.moved.update(_moved(top.get("moved"), member, file))
    member.rotated.update(_rotated(top.get("rotated"), file))
    check_reserved(member, ReservedNames(coop, {}), catalogue, coop)
    return member


def _moved(value: object, member: Member, file: str) -> dict[str, dict[str, str]]:
    """`moved:` (written by `member move`): the host each moved service left, and when.

    The host it left relays what still arrives there (mail) to the new one until `members
    purge` drops the record after `retention.relay_days`.
    """
    moved: dict[str, dict[str, str]] = {}
    for name, record in checks.mapping(value, file, "moved").items():
        where = f"moved.{name}"
        if name not in member.services:
            checks.fail(file, where, name, "a move of a service that is not enabled")
        entry = checks.mapping(record, file, where)
        checks.refuse_unknown_keys(entry, ("from", "on"), file, where)
        host = checks.host_name(entry.get("from"), file, f"{where}.from")
        if host == member.placement.get(name):
            checks.fail(file, f"{where}.from", host, "is where the service is placed now")
        moved[name] = {"from": host, "on": _date(entry.get("on"), file, f"{where}.on")}
    return moved


def _rotated(value: object, file: str) -> dict[str, dict[str, int]]:
    """`rotated:` (written by `secrets rotate`): how often each password was rotated.

    Service -> {secret key: count}; a key is a secret's name, `/` and the mailbox for a
    per-mailbox one. Entries of services or mailboxes no longer there are kept (a count only
    grows) and simply unused.
    """
    rotated: dict[str, dict[str, int]] = {}
    for name, counts in checks.mapping(value, file, "rotated").items():
        checks.slug(name, file, "rotated")
        entries = checks.mapping(counts, file, f"rotated.{name}")
        rotated[name] = {}
        for key, count in entries.items():
            if not ROTATED_KEY_RE.match(key):
                checks.fail(file, f"rotated.{name}", key,
                            "must be a secret's name, or its name, '/' and a mailbox")
            rotated[name][key] = checks.integer(count, file, f"rotated.{name}.{key}", 1,
                                                MAX_LIMIT)
    return rotated


def _date(value: object, file: str, where: str,
          reason: str = "must be a date (YYYY-MM-DD)") -> str:
    """A YYYY-MM-DD date (YAML may have read it as a date already); `reason` names a bad one."""
    import datetime as dt

    text = value.isoformat() if isinstance(value, dt.date) else value
    try:
        if not isinstance(text, str) or len(text) != len("YYYY-MM-DD"):
            raise ValueError(text)
        return dt.date.fromisoformat(text).isoformat()
    except ValueError:
        checks.fail(file, where, value, reason)
        return ""


def _life(value: object, file: str) -> str:
    """The member's life id (written by coophost; absent until the first deploy or render)."""
    if value is None:
        return ""
    if not isinstance(value, str) or not LIFE_RE.fullmatch(value):
        checks.fail(file, "id", value, "must be the 12 lowercase hex digits coophost wrote",
                    hint="coophost writes a member's id; never copy one from another member")
    return str(value)


def _departed_on(value: object, status: object, file: str) -> str:
    """The departure date: required (YYYY-MM-DD) for a departed member, refused otherwise."""
    if status != "departed":
        if value is not None:
            checks.fail(file, "departed_on", value, "only a departed member has one")
        return ""
    day = _date(value, file, "departed_on",
                "a departed member needs its departure date (YYYY-MM-DD)")
    if day and not DEPARTURES[0] <= day <= DEPARTURES[1]:
        checks.fail(file, "departed_on", day, f"must be a date from {DEPARTURES[0]} to "
                    f"{DEPARTURES[1]}")
    return day


def resolve_settings(service: Service, given: object, member: Member, coop: Coop,
                     file: str) -> dict[str, Any]:
    """Return a service's settings with defaults applied, each checked against its parameter."""
    where = f"services.{service.name}"
    values = checks.mapping(given, file, where)
    checks.refuse_unknown_keys(values, service.parameters, file, where)
    if service.needs_domain and not member.domains:
        checks.fail(file, where, service.name, "this service needs the member to have a domain")
    limits = coop.allowances["services"].get(service.name, {})
    resolved: dict[str, Any] = {}
    for param in service.parameters.values():
        field = f"{where}.{param.name}"
        value = values.get(param.name, param.default)
        resolved[param.name] = _parameter_value(param, value, member, coop, file, field)
        limit = limits.get(param.name)
        if limit is not None:
            size = resolved[param.name]
            size = size if isinstance(size, int) else len(size)
            if size > limit:
                checks.fail(file, field, values.get(param.name, param.default),
                            f"the co-op allows at most {limit}")
    if service.hooks is not None:  # cross-field checks only the service knows
        service.hooks.check_settings(resolved, file, where)
    return resolved


def _parameter_value(param: Parameter, value: object, member: Member, coop: Coop,
                     file: str, field: str) -> Any:
    kind = param.type
    if kind == "int":
        return checks.integer(value, file, field, param.min, param.max)
    if kind == "bool":
        return checks.boolean(value, file, field)
    if kind == "choice":
        if value not in param.choices:
            checks.fail(file, field, value, f"must be one of {', '.join(param.choices)}")
        return value
    if kind == "text":
        return checks.text(value, file, field, param.max_len)
    if kind == "email":
        if value == "{contact}":
            value = member.contact
        return checks.email(value, file, field)
    if kind == "localparts":
        names = [checks.localpart(v, file, f"{field}[{i}]")
                 for i, v in enumerate(checks.sequence(value, file, field, param.max_items))]
        if len(set(names)) != len(names):
            checks.fail(file, field, value, "a name is listed twice")
        return names
    if kind == "aliases":
        return _aliases(value, param, file, field)
    if kind == "member_domains":
        return _member_domains(value, member, file, field)
    if kind == "vhost":
        return _vhost(value, param, member, coop, file, field)
    raise AssertionError(f"unknown parameter type {kind}")  # pragma: no cover


def _aliases(value: object, param: Parameter, file: str, field: str) -> dict[str, list[str]]:
    aliases = checks.mapping(value, file, field)
    if len(aliases) > param.max_items:
        checks.fail(file, field, f"{len(aliases)} aliases", f"at most {param.max_items}")
    result: dict[str, list[str]] = {}
    for name, targets in aliases.items():
        checks.localpart(name, file, f"{field}.{name}")
        if isinstance(targets, str):
            targets = [targets]
        checked = []
        for i, target in enumerate(checks.sequence(targets, file, f"{field}.{name}", 50)):
            where = f"{field}.{name}[{i}]"
            if isinstance(target, str) and "@" in target:
                checked.append(checks.email(target, file, where))
            else:
                checked.append(checks.localpart(target, file, where))
        if not checked:
            checks.fail(file, f"{field}.{name}", targets, "an alias needs a target")
        result[name] = checked
    return result


def _member_domains(value: object, member: Member, file: str, field: str) -> list[str]:
    if value == "all":
        return [d.ascii for d in member.domains]
    chosen = []
    for i, item in enumerate(checks.sequence(value, file, field, MAX_DOMAINS)):
        _, ascii_form = checks.domain(item, file, f"{field}[{i}]")
        if ascii_form not in {d.ascii for d in member.domains}:
            checks.fail(file, f"{field}[{i}]", item, "not one of the member's domains")
        chosen.append(ascii_form)
    if not chosen:
        checks.fail(file, field, value, "needs at least one domain (or `all`)")
    return chosen


def _vhost(value: object, param: Parameter, member: Member, coop: Coop, file: str,
           field: str) -> str:
    fallback = (param.fallback or "{slug}.{coop_domain}").format(slug=member.slug,
                                                                   coop_domain=coop.domain)
    if value == param.default:
        if not member.domains:
            return fallback
        value = str(param.default).format(domain=member.domains[0].ascii)
    _, ascii_form = checks.domain(value, file, field)
    owned = any(ascii_form == d.ascii or ascii_form.endswith("." + d.ascii)
                for d in member.domains)
    if not owned and ascii_form != fallback:
        checks.fail(file, field, value, "must be one of the member's domains or a subdomain "
                    "of one", hint=f"or the co-op address {fallback}")
    return ascii_form


def claims(member: Member, catalogue: Catalogue) -> list[tuple[str, str, str]]:
    """Return what `member` claims co-op-wide: (key, field, value).

    Its domains, its services' vhosts, what each service's hooks claim (mail: addresses),
    and its SSH keys.
    """
    result = [(domain.ascii, f"domains[{index}]", domain.name)
              for index, domain in enumerate(member.domains)]
    for service_name, settings in member.services.items():
        vhost = settings.get("vhost")
        if vhost is not None and not any(vhost == d.ascii for d in member.domains):
            result.append((vhost, f"services.{service_name}.vhost", vhost))
    for service_name, settings in member.services.items():
        hooks = catalogue.services[service_name].hooks
        if hooks is not None:
            result.extend(hooks.claims(member, settings))
    for index, key in enumerate(member.ssh_keys):
        result.append((ssh_key_claim(key), f"ssh_keys[{index}]", key))
    return result


def ssh_key_claim(line: str) -> str:
    """The claim key of an SSH public key: its type and key material, comment left out."""
    import hashlib

    kind, blob = line.split(" ", 2)[:2]
    return "ssh:" + hashlib.sha256(f"{kind} {blob}".encode()).hexdigest()


class ReservedNames:
    """The names no member may claim, nor a name under or above one.

    The co-op's own domain, every host's name, and a lab's domain with its DNS and ACME names.
    Under the co-op's (or lab's) domain a member may hold only its services' fallback
    addresses (`<slug>.<service>.<co-op domain>`), and only when such a name is not itself
    reserved or under a host's name.
    """

    def __init__(self, coop: Coop, hosts: Mapping[str, Host]) -> None:
        self.coop_domain = coop.domain
        self.names = {coop.domain: "the co-op's own domain"}
        for host in hosts.values():
            if "." in host.fqdn:
                self.names[host.fqdn] = f"the name of host {host.name!r}"
            if host.lab_domain:
                self.names.setdefault(host.lab_domain, "the lab's domain")
                for service in ("dns", "acme"):
                    self.names[f"{service}.{host.lab_domain}"] = f"the lab's {service} server"
        self.above: dict[str, str] = {}
        for name, what in self.names.items():
            for parent in _parents(name):
                self.above.setdefault(parent, f"holds {what} ({name})")

        self.domains = {coop.domain, *(h.lab_domain for h in hosts.values() if h.lab_domain)}

    def problem(self, key: str, fallbacks: Collection[str] = ()) -> str | None:
        """Why a member may not claim the domain or vhost `key`, or None when it may.

        `fallbacks`: the member's fallback addresses it may hold under the co-op's domain.
        """
        if key in self.names:
            return f"is {self.names[key]}"
        if key in self.above:
            return self.above[key]
        own = key in fallbacks
        for parent in _parents(key):
            if parent in self.names and not (own and parent in self.domains):
                return f"is under {self.names[parent]} ({parent})"
        return None


def fallback_addresses(slug: str, services: Iterable[str], catalogue: Catalogue,
                       coop: Coop) -> set[str]:
    """The co-op addresses (`<slug>.<service>.<co-op domain>`) of a member's vhost services."""
    return {(param.fallback or "{slug}.{coop_domain}").format(slug=slug,
                                                              coop_domain=coop.domain)
            for name in services for param in catalogue.services[name].parameters.values()
            if param.type == "vhost"}


def _parents(name: str) -> list[str]:
    """The domains above `name` that have at least two labels."""
    labels = name.split(".")
    return [".".join(labels[start:]) for start in range(1, len(labels) - 1)]


def check_reserved(member: Member, reserved: ReservedNames, catalogue: Catalogue,
                   coop: Coop) -> None:
    """Refuse a domain or vhost `member` claims that is reserved."""
    fallbacks = fallback_addresses(member.slug, member.services, catalogue, coop)
    for key, field, value in claims(member, catalogue):
        if "@" in key or key.startswith("ssh:"):  # an address's domain is checked on its own
            continue
        problem = reserved.problem(key, fallbacks if field.startswith("services.") else ())
        if problem is not None:
            checks.fail(member.file, field, value, f"{problem}: no member may claim it")


def check_claims(claimed: Iterable[tuple[str, str, list[tuple[str, str, str]]]]) -> None:
    """Refuse a key claimed by two members; `claimed` yields (slug, file, claims) in order."""
    owners: dict[str, tuple[str, str]] = {}
    for slug, file, items in claimed:
        for key, field, value in items:
            owner, owner_file = owners.setdefault(key, (slug, file))
            if owner != slug:
                what = "this SSH key " if key.startswith("ssh:") else ""
                checks.fail(file, field, value, f"{what}already belongs to member {owner!r} "
                            f"({owner_file})")


def check_placement(file: str, placement: Mapping[str, str], hosts: Mapping[str, Host],
                    catalogue: Catalogue) -> None:
    """Refuse a placement on a host that does not exist or is not in the service's group."""
    for service_name, host_name in placement.items():
        host = hosts.get(host_name)
        where = f"placement.{service_name}"
        if host is None:
            checks.fail(file, where, host_name, "no such host in hosts.yml",
                        hint=f"hosts: {', '.join(hosts) or 'none'}")
        group = catalogue.services[service_name].group
        if host is not None and group not in host.groups:
            checks.fail(file, where, host_name, f"host is not in the {group!r} group of "
                        "hosts.yml")


def cross_check(registry: Registry, catalogue: Catalogue) -> None:
    """Check across records: unique domains, addresses and vhosts; placement references."""
    check_claims((m.slug, m.file, claims(m, catalogue)) for m in registry.members.values())
    reserved = ReservedNames(registry.coop, registry.hosts)
    for member in registry.members.values():
        check_reserved(member, reserved, catalogue, registry.coop)
        check_placement(member.file, member.placement, registry.hosts, catalogue)
