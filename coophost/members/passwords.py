"""Password rotation: new generated passwords for a member's logins, applied by the next deploy.

What is rotated: the passwords a member logs in with and that hosts get only as a hash their
role writes on every deploy: every mailbox password (mail's `per_mailbox_password`, dovecot's
passwd-file) and every hashed password (git's HTTPS password, nginx's htpasswd file). Other
generated secrets are never rotated here: a database password or an application's admin
password is set once inside the service's own data, a DKIM key is published in DNS, a backup
passphrase opens the existing archives; a new value would lock the service out of its own
data rather than lock an old password out.

A rotation replaces the secret (and its hash) in secrets/<member>.yml, vault-encrypted, and
counts it in the member file (`rotated: {mail: {mailbox_passwords/alice: 1}}`). The count is
part of the unit's hash, so `coophost plan` shows the unit changed ("password rotated") and
the next deploy writes the new hash; secret values themselves never enter a hash.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coophost.errors import UsageError
from coophost.registry import checks
from coophost.registry.catalogue import Catalogue
from coophost.registry.loader import Loaded
from coophost.registry.model import Member
from coophost.secrets import SecretRef


@dataclass(frozen=True)
class Rotation:
    """One password to rotate: its secret, and the login it is for."""

    ref: SecretRef
    login: str  # what the member logs in as: `alice@example.org`, or the slug for git HTTPS

    @property
    def mailbox(self) -> str:
        """The mailbox (localpart), or "" for a password that is not a mailbox's."""
        return self.ref.item


@dataclass(frozen=True)
class Rotated:
    """A rotation done: the login and its new password (shown once, never logged)."""

    rotation: Rotation
    password: str


def rotatable(member: Member, catalogue: Catalogue) -> list[Rotation]:
    """Every password of `member` that a rotation may replace (see the module docstring)."""
    found: list[Rotation] = []
    for service_name, settings in member.services.items():
        service = catalogue.services[service_name]
        for spec in service.secrets:
            if spec.kind == "per_mailbox_password":
                domain = _first_domain(settings)
                found.extend(Rotation(SecretRef(member.owner, service_name, spec.name, mailbox),
                                      f"{mailbox}@{domain}" if domain else mailbox)
                             for mailbox in settings.get("mailboxes", ()))
            elif spec.kind == "password" and spec.hash:
                found.append(Rotation(SecretRef(member.owner, service_name, spec.name,
                                                hashed=True), member.slug))
    return found


def _first_domain(settings: Mapping[str, Any]) -> str:
    domains = settings.get("domains") or ()
    return str(domains[0]) if domains else ""


def select(member: Member, catalogue: Catalogue, mailbox: str | None) -> list[Rotation]:
    """The rotations asked for: one mailbox's, or every rotatable password (UsageError if none).

    A mailbox the member does not have is refused naming the member and the mailbox, with the
    closest of its mailboxes.
    """
    every = rotatable(member, catalogue)
    if mailbox is None:
        if not every:
            raise UsageError(f"member {member.slug} has no password to rotate",
                             hint="rotated: mailbox passwords (mail) and hashed login passwords "
                                  "(git's HTTPS password)")
        return every
    mailboxes = [r for r in every if r.mailbox]
    chosen = [r for r in mailboxes if mailbox in (r.mailbox, r.login)]
    if not chosen:
        known = sorted({r.mailbox for r in mailboxes})
        hint = (checks.suggest(mailbox, known) if known
                else f"{member.slug} has no mailbox (no mail service)")
        error = UsageError(f"member {member.slug} has no mailbox {mailbox!r}", hint=hint)
        error.member_hint = True  # type: ignore[attr-defined]  # the member shell shows it
        raise error
    return chosen


def bumped(rotated: Mapping[str, Mapping[str, int]], rotations: Iterable[Rotation]
           ) -> dict[str, dict[str, int]]:
    """The member file's `rotated:` after these rotations: each one's count plus one. Pure."""
    result = {service: dict(counts) for service, counts in rotated.items()}
    for rotation in rotations:
        counts = result.setdefault(rotation.ref.service, {})
        key = rotation.ref.rotation_key
        counts[key] = counts.get(key, 0) + 1
    return result


def audit_event(slug: str, by: str, rotations: Iterable[Rotation]) -> dict[str, Any]:
    """The audit log's record of a rotation: who, whose, which logins; never a password."""
    items = list(rotations)
    return {"by": by, "action": "password rotated", "member": slug,
            "services": sorted({r.ref.service for r in items}),
            "logins": [r.login for r in items],
            "mailboxes": [r.mailbox for r in items if r.mailbox]}


def rotate(root: Path, slug: str, mailbox: str | None, by: str) -> list[Rotated]:
    """Rotate a member's passwords (one mailbox's, or all); return the new ones.

    Under the co-op lock: the member file's counts are written first, then the secrets file,
    then the audit log. A failure between the two leaves the old passwords working and a
    redeploy of the same hashes pending, never a new password that the plan does not see.
    Bad input writes nothing.
    """
    from coophost.lock import coop_lock
    from coophost.members.audit import audit
    from coophost.registry.edit import update_member
    from coophost.registry.loader import load_registry
    from coophost.secrets import SecretStore

    with coop_lock(root, purpose=f"secrets rotate {slug}"):
        loaded = load_registry(root, need_hosts=False)
        member = _member(loaded, root, slug)
        rotations = select(member, loaded.catalogue, mailbox)
        store = SecretStore(root, loaded.registry.coop.vault, loaded.catalogue)
        done = [Rotated(r, store.replace(r.ref)) for r in rotations]
        counts = bumped(member.rotated, rotations)

        def change(doc: Any) -> None:
            from ruamel.yaml.comments import CommentedMap

            block = CommentedMap()
            block.fa.set_block_style()
            for service in sorted(counts):
                inner = CommentedMap(sorted(counts[service].items()))
                inner.fa.set_block_style()
                block[service] = inner
            doc["rotated"] = block

        update_member(root, loaded, slug, change)
        store.save()
        audit(root, audit_event(slug, by, rotations))
    return done


def _member(loaded: Loaded, root: Path, slug: str) -> Member:
    found = loaded.registry.members.get(slug)
    if found is None:
        raise checks.no_member(slug, (p.stem for p in (root / "members").glob("*.yml")))
    return found
