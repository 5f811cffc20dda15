"""Load a co-op directory: read, validate and cross-check, reusing the parse cache."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coophost import __version__
from coophost.catalogue import Catalogue, load_catalogue
from coophost.errors import ConfigError
from coophost.registry.cache import ParseCache
from coophost.registry.model import (
    COOP_FILE,
    HOSTS_FILE,
    MEMBERS_DIR,
    STATE_DIR,
    Coop,
    Host,
    Member,
    Registry,
)
from coophost.registry.parse import cross_check, parse_coop, parse_hosts, parse_member
from coophost.registry.yamlio import load_bytes

CACHE_FILE = "cache/registry.marshal"


@dataclass
class Loaded:
    """A loaded registry, its catalogue, and the cache entries' extras (slug -> dict)."""

    registry: Registry
    catalogue: Catalogue
    extras: dict[str, dict[str, Any]]
    cache: ParseCache
    fingerprint: str


def _read(root: Path, name: str) -> bytes:
    try:
        return (root / name).read_bytes()
    except FileNotFoundError:
        hint = ("run `coophost lab up` to create the lab's hosts" if name == HOSTS_FILE
                else "run `coophost init DIR` to create a co-op directory")
        raise ConfigError(f"{root / name}: no such file", hint=hint) from None


def load_coop(root: Path, catalogue: Catalogue | None = None) -> tuple[Coop, bytes]:
    """coop.yml, validated, and its bytes."""
    raw = _read(root, COOP_FILE)
    return parse_coop(load_bytes(raw, COOP_FILE), COOP_FILE,
                      catalogue or load_catalogue()), raw


def load_hosts(root: Path, catalogue: Catalogue | None = None) -> dict[str, Host]:
    """hosts.yml, validated: every host with its groups and declared capacity."""
    raw = _read(root, HOSTS_FILE)
    return parse_hosts(load_bytes(raw, HOSTS_FILE), HOSTS_FILE, catalogue or load_catalogue())


def load_registry(root: Path, *, need_hosts: bool = True, use_cache: bool = True,
                  salt: str = "") -> Loaded:
    """Read and check the whole co-op directory at `root`.

    `salt` joins the cache fingerprint: callers that keep derived data in the extras (unit
    hashes depend on role versions) pass what that data depends on.
    """
    if not (root / COOP_FILE).is_file():
        raise ConfigError(f"{root}: not a co-op directory (no {COOP_FILE})",
                          hint="pass -i/--inventory, or run `coophost init DIR`")
    catalogue = load_catalogue()
    coop, coop_raw = load_coop(root, catalogue)
    hosts: dict[str, Host] = {}
    if need_hosts or (root / HOSTS_FILE).is_file():
        hosts = load_hosts(root, catalogue)
    fingerprint = hashlib.sha256("\0".join(
        [__version__, catalogue.digest, hashlib.sha256(coop_raw).hexdigest(), salt]
    ).encode()).hexdigest()
    cache = ParseCache(root / STATE_DIR / CACHE_FILE if use_cache else None, fingerprint)
    members, extras = _load_members(root, coop, catalogue, cache)
    registry = Registry(root=root, coop=coop, hosts=hosts, members=members)
    if need_hosts or hosts:
        cross_check(registry, catalogue)
    else:
        cross_check(Registry(root, coop, hosts, {
            slug: _without_placement(m) for slug, m in members.items()}), catalogue)
    return Loaded(registry=registry, catalogue=catalogue, extras=extras, cache=cache,
                  fingerprint=fingerprint)


def _without_placement(member: Member) -> Member:
    return Member(member.slug, member.name, member.contact, member.status, member.domains,
                  member.ssh_keys, member.services, {}, member.file)


def _load_members(root: Path, coop: Coop, catalogue: Catalogue,
                  cache: ParseCache) -> tuple[dict[str, Member], dict[str, dict[str, Any]]]:
    members: dict[str, Member] = {}
    extras: dict[str, dict[str, Any]] = {}
    directory = root / MEMBERS_DIR
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except FileNotFoundError:
        entries = []
    seen: set[str] = set()
    for entry in entries:
        if entry.name.startswith(".") or not entry.name.endswith(".yml"):
            continue
        seen.add(entry.name)
        stat = entry.stat()
        hit = cache.lookup(entry.name, stat)
        if hit is None:
            raw = Path(entry.path).read_bytes()
            hit = cache.lookup_content(entry.name, stat, raw)
            if hit is None:
                label = f"{MEMBERS_DIR}/{entry.name}"
                member = parse_member(load_bytes(raw, label), label, entry.name[:-4], coop,
                                      catalogue)
                hit = member.to_plain(), cache.store(entry.name, stat, raw, member.to_plain())
        record, extra = hit
        member = Member.from_plain(record)
        members[member.slug] = member
        extras[member.slug] = extra
    cache.forget_except(seen)
    return members, extras
