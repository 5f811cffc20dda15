"""Pure parsing and validation of coop.yml, hosts.yml and member files into registry records."""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from coophost.errors import ValidationError
from coophost.registry import checks
from coophost.registry.catalogue import Catalogue, Parameter, Service
from coophost.registry.model import (
    DNS_GROUP,
    MEMBER_STATUSES,
    Coop,
    Domain,
    Host,
    HostEntry,
    Member,
    Registry,
    VaultSettings,
)
from coophost.registry.workers import WORKERS_GROUP, Worker, is_worker, parse_worker

COOP_KEYS = ("name", "domain", "contacts", "acme", "artifacts", "allowances", "retention",
             "vault", "suspended_mail", "dns")
MAX_DNS_ZONES = 1000
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
    """Check coop.yml's content; every problem of the file is reported at once."""
    top = checks.mapping(data, file, "")
    errors = checks.Collector()
    with errors.check():
        checks.refuse_unknown_keys(top, COOP_KEYS, file, "")
    name = domain = acme_directory = acme_email = suspended_mail = ""
    with errors.check():
        name = checks.text(top.get("name"), file, "name", 100)
    with errors.check():
        domain, _ = checks.domain(top.get("domain"), file, "domain")
    contacts: list[str] = []
    contacts_ok = True
    with errors.check():
        given = checks.sequence(top.get("contacts"), file, "contacts", 20)
        if not given:
            checks.fail(file, "contacts", [], "needs at least one contact address")
    for index, contact in enumerate(top.get("contacts") or []
                                    if isinstance(top.get("contacts"), list) else []):
        try:
            contacts.append(checks.email(contact, file, f"contacts[{index}]"))
        except ValidationError as exc:
            errors.errors.extend(exc.errors)
            contacts_ok = False
    acme: dict[str, Any] = {}
    with errors.check():
        acme = checks.mapping(top.get("acme"), file, "acme")
    with errors.check():
        checks.refuse_unknown_keys(acme, ("directory", "email"), file, "acme")
    with errors.check():
        acme_directory = checks.url(acme.get("directory",
                                             "https://acme-v02.api.letsencrypt.org/directory"),
                                    file, "acme.directory")
    if "email" in acme or (contacts and contacts_ok):
        with errors.check():
            acme_email = checks.email(acme.get("email", contacts[0] if contacts else None),
                                      file, "acme.email")
    source = None
    with errors.check():
        artifacts = checks.mapping(top.get("artifacts"), file, "artifacts")
        with errors.check():
            checks.refuse_unknown_keys(artifacts, ("source",), file, "artifacts")
        source = artifacts.get("source")
        if source is not None:
            checks.text(source, file, "artifacts.source", 500)
    allowances: dict[str, Any] = {}
    with errors.check():
        allowances = _allowances(top.get("allowances"), file, catalogue)
    retention: dict[str, int] = {}
    with errors.check():
        given_retention = checks.mapping(top.get("retention"), file, "retention")
        for key, value in given_retention.items():
            with errors.check():
                retention[key] = checks.integer(value, file, f"retention.{key}", 0, 36500)
    vault = VaultSettings(password_file=None, password_env=None)
    with errors.check():
        vault = _vault(top.get("vault"), file)
    with errors.check():
        suspended_mail = _choice(top.get("suspended_mail", "accept"), SUSPENDED_MAIL, file,
                                 "suspended_mail")
    zones: list[str] = []
    with errors.check():
        zones = _dns_zones(top.get("dns"), file)
    errors.done()
    return Coop(
        name=name, domain=domain, contacts=tuple(contacts), acme_directory=acme_directory,
        acme_email=acme_email, artifact_source=source, allowances=allowances,
        retention=retention, vault=vault, suspended_mail=suspended_mail,
        dns_zones=tuple(zones),
    )


def _dns_zones(value: object, file: str) -> list[str]:
    """coop.yml `dns: {zones: [...]}`: the zones the co-op's dns hosts serve (ASCII names).

    Each is a domain name (the same check as member domains), listed once. Absent: none.
    """
    if value is None:
        return []
    given = checks.mapping(value, file, "dns")
    checks.refuse_unknown_keys(given, ("zones",), file, "dns")
    errors = checks.Collector()
    zones: list[str] = []
    items = checks.sequence(given.get("zones", []), file, "dns.zones", MAX_DNS_ZONES)
    for index, item in enumerate(items):
        with errors.check():
            _, ascii_name = checks.domain(item, file, f"dns.zones[{index}]")
            if ascii_name in zones:
                checks.fail(file, f"dns.zones[{index}]", item, "is listed twice")
            zones.append(ascii_name)
    errors.done()
    return zones


def _choice(value: object, choices: tuple[str, ...], file: str, field: str) -> str:
    if value not in choices:
        checks.fail(file, field, value, f"must be one of {', '.join(choices)}")
    return str(value)


def _allowances(data: object, file: str, catalogue: Catalogue) -> dict[str, Any]:
    allowances = checks.mapping(data, file, "allowances")
    errors = checks.Collector()
    with errors.check():
        checks.refuse_unknown_keys(allowances, ("domains", "services", "open_requests"), file,
                                   "allowances")
    result: dict[str, Any] = {"domains": 10, "open_requests": DEFAULT_OPEN_REQUESTS,
                              "services": {}}
    with errors.check():
        result["domains"] = checks.integer(allowances.get("domains", 10), file,
                                           "allowances.domains", 0, MAX_DOMAINS)
    with errors.check():
        result["open_requests"] = checks.integer(
            allowances.get("open_requests", DEFAULT_OPEN_REQUESTS), file,
            "allowances.open_requests", 0, MAX_OPEN_REQUESTS)
    per_service: dict[str, Any] = {}
    with errors.check():
        per_service = checks.mapping(allowances.get("services"), file, "allowances.services")
    with errors.check():
        checks.refuse_unknown_keys(per_service, catalogue.services, file, "allowances.services")
    for service_name, limits in per_service.items():
        if service_name not in catalogue.services:
            continue
        where = f"allowances.services.{service_name}"
        with errors.check():
            limits = checks.mapping(limits, file, where)
            service = catalogue.services[service_name]
            limited = [p.name for p in service.parameters.values()
                       if p.type in ("int", "localparts", "aliases", "member_domains")]
            with errors.check():
                checks.refuse_unknown_keys(limits, limited, file, where)
            result["services"][service_name] = checked = {}
            for key, value in limits.items():
                with errors.check():
                    checked[key] = checks.integer(value, file, f"{where}.{key}", 0, MAX_LIMIT)
    errors.done()
    return result


def _vault(data: object, file: str) -> VaultSettings:
    vault = checks.mapping(data, file, "vault")
    errors = checks.Collector()
    with errors.check():
        checks.refuse_unknown_keys(vault, ("password_file", "password_env",
                                           "create_password_file"), file, "vault")
    password_file = vault.get("password_file")
    password_env = vault.get("password_env")
    if password_file is not None:
        with errors.check():
            checks.text(password_file, file, "vault.password_file", 500)
    if password_env is not None and (not isinstance(password_env, str)
                                     or not password_env.isidentifier()):
        with errors.check():
            checks.fail(file, "vault.password_env", password_env, "must be an environment "
                        "variable name")
    if password_file is None and password_env is None:
        with errors.check():
            checks.fail(file, "vault", vault, "name a password_file or a password_env")
    create = False
    with errors.check():
        create = checks.boolean(vault.get("create_password_file", False), file,
                                "vault.create_password_file")
    errors.done()
    return VaultSettings(password_file=password_file, password_env=password_env,
                         create_password_file=create)


def parse_hosts(data: object, file: str, catalogue: Catalogue) -> dict[str, Host]:
    """Check hosts.yml (a plain Ansible inventory): every host with its groups and capacity.

    The one reader of hosts.yml: each Host also carries its connection facts (`connection`:
    address, port, user, key file, groups and merged variables), for SSH and ansible-runner.
    A host's own variables override its groups' and a group's override those of the groups
    walked before it (`all` first, then its children in order), as Ansible's child groups do.
    """
    return parse_inventory(data, file, catalogue)[0]


def parse_workers(data: object, file: str, catalogue: Catalogue) -> list[Worker]:
    """The execution nodes of hosts.yml (group `coophost_workers`), checked: see parse_hosts."""
    return parse_inventory(data, file, catalogue)[1]


def parse_inventory(data: object, file: str, catalogue: Catalogue
                    ) -> tuple[dict[str, Host], list[Worker]]:
    """hosts.yml's service hosts and its workers (coophost.registry.workers), both checked.

    A worker is no service host: it is left out of the hosts, may be in no service group,
    and what it serves must be hosts or groups of the file.
    """
    top = checks.mapping(data, file, "")
    if "all" not in top:
        checks.fail(file, "all", None, "an Ansible YAML inventory starts with `all:`")
    errors = checks.Collector()
    raw_hosts: dict[str, dict[str, dict[str, Any]]] = {}
    groups: dict[str, set[str]] = {}
    _walk_group("all", top["all"], {}, raw_hosts, groups, file, "all", errors)
    service_groups = {service.group for service in catalogue.services.values()}
    hosts: dict[str, Host] = {}
    worker_hosts: dict[str, Host] = {}
    for name, layers in raw_hosts.items():
        member_of = groups.get(name, set())
        if is_worker(member_of):
            with errors.check():
                taken = sorted(member_of & (service_groups | {DNS_GROUP}))
                if taken:
                    checks.fail(file, f"{WORKERS_GROUP}.hosts.{name}", ", ".join(taken),
                                "a worker runs other hosts' jobs and is no service host: "
                                "it may be in no service group",
                                hint="give the services another host")
        host = _host(name, layers, groups, service_groups, file, errors)
        if host is not None:
            (worker_hosts if is_worker(member_of) else hosts)[name] = host
    with errors.check():
        _one_dns_host(groups, file)
    all_groups = {g for member_of in groups.values() for g in member_of}
    workers = []
    for _name, host in sorted(worker_hosts.items()):
        with errors.check():
            assert host.connection is not None
            workers.append(parse_worker(host.connection, file, hosts, all_groups))
    errors.done()
    return dict(sorted(hosts.items())), workers


def _one_dns_host(groups: dict[str, set[str]], file: str) -> None:
    """Refuse a second host in group `dns` (coophost.dns.serve).

    Each would sign and serve the zones on its own, and `dns push` updates only the first, so
    the others would answer with stale records. Secondaries (zone transfers from the first)
    are not built yet.
    """
    found = sorted(name for name, member_of in groups.items() if DNS_GROUP in member_of)
    if len(found) > 1:
        checks.fail(file, f"{DNS_GROUP}.hosts", ", ".join(found),
                    "only one authoritative DNS host is supported: a second would serve its "
                    "own copy of the zones, which `coophost dns push` never updates",
                    hint=f"keep one host in group {DNS_GROUP}; secondaries are not built yet")


def _host(name: str, layers: dict[str, dict[str, Any]], groups: dict[str, set[str]],
          service_groups: set[str], file: str, errors: checks.Collector) -> Host | None:
    """One host of hosts.yml, or None when its variables have problems (kept in `errors`)."""
    hvars = {**layers["group"], **layers["host"]}
    where = f"hosts.{name}"
    found = len(errors.errors)
    with errors.check():
        checks.host_name(name, file, where)
    member_of = tuple(sorted(groups.get(name, set()) - {"all"}))
    port = 22
    if "ansible_port" in hvars:
        with errors.check():
            port = checks.integer(hvars["ansible_port"], file, f"{where}.ansible_port", 1, 65535)
    key_file = hvars.get("ansible_ssh_private_key_file")
    capacity = {"ram_mb": 0, "disk_gb": 0}
    with errors.check():
        capacity = _capacity(hvars.get("coophost_capacity"), file,
                             f"{where}.coophost_capacity",
                             required=bool(service_groups.intersection(member_of)))
    fqdn = hvars.get("coophost_fqdn", name)
    if "." in str(fqdn):
        with errors.check():
            fqdn, _ = checks.domain(fqdn, file, f"{where}.coophost_fqdn")
    lab_domain = hvars.get("coophost_lab_domain")
    if lab_domain is not None:
        with errors.check():
            lab_domain, _ = checks.domain(lab_domain, file, f"{where}.coophost_lab_domain")
    dns_addresses: tuple[str, ...] = ()
    with errors.check():
        dns_addresses = _dns_addresses(hvars, file, where)
    if len(errors.errors) > found:
        return None
    return Host(name=name, fqdn=str(fqdn), address=str(hvars.get("ansible_host", name)),
                groups=member_of, capacity=capacity, dns_addresses=dns_addresses,
                vars_digest=_vars_digest(hvars), lab_domain=lab_domain or "",
                connection=HostEntry(
                    name=name, address=str(hvars.get("ansible_host", name)),
                    port=port, user=str(hvars.get("ansible_user", "root")),
                    key_file=key_file if isinstance(key_file, str) else None,
                    groups=member_of, vars=hvars))


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
                file: str, where: str, errors: checks.Collector) -> None:
    """Collect each host's group variables and own variables (kept apart), and its groups.

    A problem of a group is kept in `errors` and the walk goes on with the next group.
    """
    with errors.check():
        spec = checks.mapping(node, file, where)
        with errors.check():
            checks.refuse_unknown_keys(spec, ("hosts", "vars", "children"), file, where)
        merged = {**inherited, **checks.mapping(spec.get("vars"), file, f"{where}.vars")}
        with errors.check():
            for name, hvars in checks.mapping(spec.get("hosts"), file,
                                              f"{where}.hosts").items():
                with errors.check():
                    own = checks.mapping(hvars, file, f"{where}.hosts.{name}")
                    entry = hosts.setdefault(name, {"group": {}, "host": {}})
                    entry["group"].update(merged)
                    entry["host"].update(own)
                    groups.setdefault(name, set()).add(group)
        for child, sub in checks.mapping(spec.get("children"), file,
                                         f"{where}.children").items():
            _walk_group(child, sub, merged, hosts, groups, file, f"{where}.children.{child}",
                        errors)


def parse_member(data: object, file: str, expected_slug: str, coop: Coop,
                 catalogue: Catalogue) -> Member:
    """Check one member file's content and resolve its services' settings.

    Every problem of the file is reported at once (one ValidationError naming each). A
    service's settings are checked against the member's domains and contact address, so they
    are checked once those are valid (else each bad domain would also fail every vhost).
    """
    top = checks.mapping(data, file, "")
    errors = checks.Collector()
    with errors.check():
        checks.refuse_unknown_keys(top, MEMBER_KEYS, file, "")
    slug = expected_slug
    with errors.check():
        slug = checks.slug(top.get("slug"), file, "slug")
        if slug != expected_slug:
            checks.fail(file, "slug", slug, f"must match the file name ({expected_slug}.yml)")
    status = top.get("status", "active")
    if status not in MEMBER_STATUSES:
        with errors.check():
            checks.fail(file, "status", status,
                        f"must be one of {', '.join(MEMBER_STATUSES)}")
    before = len(errors.errors)
    domains = _domains(top.get("domains"), file, coop, errors)
    name = contact = departed_on = life = ""
    with errors.check():
        name = checks.text(top.get("name"), file, "name", 200)
    with errors.check():
        contact = checks.email(top.get("contact"), file, "contact")
    identity_ok = len(errors.errors) == before  # domains and contact
    ssh_keys: list[str] = []
    with errors.check():
        for index, key in enumerate(checks.sequence(top.get("ssh_keys"), file, "ssh_keys",
                                                    50)):
            with errors.check():
                ssh_keys.append(checks.ssh_public_key(key, file, f"ssh_keys[{index}]"))
    with errors.check():
        departed_on = _departed_on(top.get("departed_on"), status, file)
    with errors.check():
        life = _life(top.get("id"), file)
    member = Member(
        slug=slug, name=name, contact=contact, status=str(status), domains=tuple(domains),
        ssh_keys=tuple(ssh_keys), services={}, placement={}, file=file,
        departed_on=departed_on, life=life)
    services: dict[str, Any] = {}
    with errors.check():
        services = checks.mapping(top.get("services"), file, "services")
    with errors.check():
        checks.refuse_unknown_keys(services, catalogue.services, file, "services")
    for service_name, settings in services.items():
        if service_name not in catalogue.services:
            continue
        with errors.check():
            catalogue.refuse_coming(service_name, file, f"services.{service_name}")
            if identity_ok:
                member.services[service_name] = resolve_settings(
                    catalogue.services[service_name], settings, member, coop, file)
    enabled = [n for n in services if n in catalogue.services]
    placement: dict[str, Any] = {}
    with errors.check():
        placement = checks.mapping(top.get("placement"), file, "placement")
    for service_name, host in placement.items():
        with errors.check():
            if service_name not in enabled:
                checks.fail(file, f"placement.{service_name}", host, "placement of a service "
                            "that is not enabled", hint=f"enabled: {', '.join(enabled) or 'none'}")
            member.placement[service_name] = checks.host_name(host, file,
                                                              f"placement.{service_name}")
    with errors.check():
        member.moved.update(_moved(top.get("moved"), member, enabled, file))
    with errors.check():
        member.rotated.update(_rotated(top.get("rotated"), file))
    with errors.check():
        check_reserved(member, ReservedNames(coop, {}), catalogue, coop)
    errors.done()
    return member


def _domains(value: object, file: str, coop: Coop, errors: checks.Collector) -> list[Domain]:
    """The member's domains, each checked; problems go to `errors`."""
    domains: list[Domain] = []
    given: list[Any] = []
    with errors.check():
        given = checks.sequence(value, file, "domains", MAX_DOMAINS)
    for index, item in enumerate(given):
        with errors.check():
            name, ascii_form = checks.domain(item, file, f"domains[{index}]")
            if any(d.ascii == ascii_form for d in domains):
                checks.fail(file, f"domains[{index}]", item, "listed twice")
            domains.append(Domain(name, ascii_form))
    max_domains = coop.allowances["domains"]
    if len(domains) > max_domains:
        with errors.check():
            checks.fail(file, "domains", f"{len(domains)} domains",
                        f"the co-op allows at most {max_domains}")
    return domains


def _moved(value: object, member: Member, enabled: list[str],
           file: str) -> dict[str, dict[str, str]]:
    """`moved:` (written by `member move`): the host each moved service left, and when.

    The host it left relays what still arrives there (mail) to the new one until `members
    purge` drops the record after `retention.relay_days`.
    """
    moved: dict[str, dict[str, str]] = {}
    errors = checks.Collector()
    for name, record in checks.mapping(value, file, "moved").items():
        where = f"moved.{name}"
        with errors.check():
            if name not in enabled:
                checks.fail(file, where, name, "a move of a service that is not enabled")
            entry = checks.mapping(record, file, where)
            checks.refuse_unknown_keys(entry, ("from", "on"), file, where)
            host = checks.host_name(entry.get("from"), file, f"{where}.from")
            if host == member.placement.get(name):
                checks.fail(file, f"{where}.from", host, "is where the service is placed now")
            moved[name] = {"from": host, "on": _date(entry.get("on"), file, f"{where}.on")}
    errors.done()
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
    errors = checks.Collector()
    with errors.check():
        checks.refuse_unknown_keys(values, service.parameters, file, where)
    if service.needs_domain and not member.domains:
        with errors.check():
            checks.fail(file, where, service.name,
                        "this service needs the member to have a domain")
    errors.done()
    limits = coop.allowances["services"].get(service.name, {})
    resolved: dict[str, Any] = {}
    errors = checks.Collector()
    for param in service.parameters.values():
        field = f"{where}.{param.name}"
        value = values.get(param.name, param.default)
        with errors.check():
            resolved[param.name] = _parameter_value(param, value, member, coop, file, field)
            limit = limits.get(param.name)
            if limit is not None:
                size = resolved[param.name]
                size = size if isinstance(size, int) else len(size)
                if size > limit:
                    checks.fail(file, field, values.get(param.name, param.default),
                                f"the co-op allows at most {limit}")
    errors.done()
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
    errors = checks.Collector()
    for key, field, value in claims(member, catalogue):
        if "@" in key or key.startswith("ssh:"):  # an address's domain is checked on its own
            continue
        problem = reserved.problem(key, fallbacks if field.startswith("services.") else ())
        if problem is not None:
            with errors.check():
                checks.fail(member.file, field, value, f"{problem}: no member may claim it")
    errors.done()


def check_claims(claimed: Iterable[tuple[str, str, list[tuple[str, str, str]]]]) -> None:
    """Refuse a key claimed by two members; `claimed` yields (slug, file, claims) in order.

    Every such key is reported at once.
    """
    owners: dict[str, tuple[str, str]] = {}
    errors = checks.Collector()
    for slug, file, items in claimed:
        for key, field, value in items:
            owner, owner_file = owners.setdefault(key, (slug, file))
            if owner != slug:
                what = "this SSH key " if key.startswith("ssh:") else ""
                with errors.check():
                    checks.fail(file, field, value, f"{what}already belongs to member "
                                f"{owner!r} ({owner_file})")
    errors.done()


def check_nested_domains(members: Iterable[Member]) -> None:
    """Refuse a member domain inside another member's (`shop.a.example` of b, `a.example` of a).

    Its records would go into the other member's zone (`dns push`, when the co-op serves it),
    and its mail and vhosts would answer for names under another member's domain. Every such
    domain is reported at once.
    """
    members = list(members)
    owners = {d.ascii: m for m in members for d in m.domains}
    errors = checks.Collector()
    for member in members:
        for index, domain in enumerate(member.domains):
            labels = domain.ascii.split(".")
            for start in range(1, len(labels) - 1):
                parent = ".".join(labels[start:])
                owner = owners.get(parent)
                if owner is not None and owner.slug != member.slug:
                    with errors.check():
                        checks.fail(member.file, f"domains[{index}]", domain.name,
                                    f"is inside {parent}, a domain of member {owner.slug!r} "
                                    f"({owner.file})",
                                    hint="a member's domains may not lie inside another "
                                         "member's; that member can add it to its own file")
                    break
    errors.done()


def check_placement(file: str, placement: Mapping[str, str], hosts: Mapping[str, Host],
                    catalogue: Catalogue) -> None:
    """Refuse a placement on a host that does not exist or is not in the service's group."""
    errors = checks.Collector()
    for service_name, host_name in placement.items():
        host = hosts.get(host_name)
        where = f"placement.{service_name}"
        with errors.check():
            if host is None:
                checks.fail(file, where, host_name, "no such host in hosts.yml",
                            hint=checks.suggest(host_name, hosts))
            group = catalogue.services[service_name].group
            if host is not None and group not in host.groups:
                checks.fail(file, where, host_name, f"host is not in the {group!r} group of "
                            "hosts.yml")
    errors.done()


def cross_check(registry: Registry, catalogue: Catalogue) -> None:
    """Check across records: unique domains, addresses and vhosts; placement references.

    Every problem found is reported at once.
    """
    errors = checks.Collector()
    with errors.check():
        check_claims((m.slug, m.file, claims(m, catalogue))
                     for m in registry.members.values())
    with errors.check():
        check_nested_domains(registry.members.values())
    reserved = ReservedNames(registry.coop, registry.hosts)
    for member in registry.members.values():
        with errors.check():
            check_reserved(member, reserved, catalogue, registry.coop)
        with errors.check():
            check_placement(member.file, member.placement, registry.hosts, catalogue)
    errors.done()
