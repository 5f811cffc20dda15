"""The lab plays its members: one SSH key pair per member whose services take members' keys.

A lab co-op's members are fictional, so the lab holds their private keys (under the lab's
folder, never committed) and registers each public key in the member's record, as the member
would through the sysadmin (`coophost member edit --add-ssh-key`). Services whose catalogue
entry has `member_ssh_keys` (git: gitolite's admin keys) then let the lab act as the member:
`coophost lab probe` pushes with that key.
"""

from __future__ import annotations

from pathlib import Path

from coophost.fsutil import atomic_write
from coophost.lab.keys import ssh_keypair
from coophost.layout import MEMBERS_DIR

KEYS_DIR = "member-keys"


def key_path(workdir: Path, slug: str) -> Path:
    """The lab's private key for member `slug` (its public key beside it, `.pub`)."""
    return workdir / KEYS_DIR / slug


def ensure_member_keys(workdir: Path, inventory: Path) -> list[str]:
    """Make and register a key for each member using a service that takes keys.

    Returns the slugs whose record gained the lab's key. Idempotent: an existing key pair is
    kept and a key already registered is not added again. Takes the co-op lock to write.
    """
    from coophost.lock import coop_lock
    from coophost.registry import edit
    from coophost.registry.loader import load_registry

    if not (inventory / MEMBERS_DIR).is_dir():
        return []
    loaded = load_registry(inventory, need_hosts=False)
    wanted = [member for member in loaded.registry.members.values()
              if any(loaded.catalogue.services[name].member_ssh_keys
                     for name in member.services)]
    public = {}
    for member in wanted:
        private = key_path(workdir, member.slug)
        pub = private.with_name(private.name + ".pub")
        if not (private.is_file() and pub.is_file()):
            pair = ssh_keypair(f"{member.slug}@lab")
            atomic_write(private, pair.private, mode=0o600)
            atomic_write(pub, pair.public + "\n")
        public[member.slug] = pub.read_text().strip()
    missing = [m.slug for m in wanted if public[m.slug] not in m.ssh_keys]
    if not missing:
        return []
    with coop_lock(inventory, purpose="lab up: members' lab keys"):
        loaded = load_registry(inventory, need_hosts=False)
        for slug in missing:
            edit.edit_fields(inventory, loaded, slug, add_keys=(public[slug],))
    return missing


def forget_member_keys(workdir: Path, inventory: Path) -> list[str]:
    """Take the lab's keys back out of the member records (`lab down`: its key pairs go).

    Returns the slugs whose record lost a key. Keys the lab did not make are never touched.
    """
    from coophost.lock import coop_lock
    from coophost.registry import edit
    from coophost.registry.loader import load_registry

    folder = workdir / KEYS_DIR
    if not folder.is_dir() or not (inventory / MEMBERS_DIR).is_dir():
        return []
    ours = {pub.read_text().strip() for pub in folder.glob("*.pub")}
    loaded = load_registry(inventory, need_hosts=False)
    holding = {m.slug: tuple(k for k in m.ssh_keys if k in ours)
               for m in loaded.registry.members.values()}
    holding = {slug: keys for slug, keys in holding.items() if keys}
    if not holding:
        return []
    with coop_lock(inventory, purpose="lab down: members' lab keys"):
        loaded = load_registry(inventory, need_hosts=False)
        for slug, keys in holding.items():
            edit.edit_fields(inventory, loaded, slug, remove_keys=keys)
    return sorted(holding)
