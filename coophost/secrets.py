"""Generated secrets, stored ansible-vault encrypted in secrets/<member>.yml.

Secrets are generated on first need (rendering a unit that references one), encrypted at once
with ansible's own VaultLib, and kept only as ciphertext on disk. The vault password comes
from the environment variable or the file coop.yml names. Nothing here prints or logs a
secret; only `coophost secrets show` decrypts one for a person (and `secrets rotate`, like
the member verb `password`, prints the new password it made, once).

A `per_mailbox_password` secret is kept as two entries per mailbox: the clear password
(`<name>/<mailbox>`, what `secrets show` prints) and its argon2id hash in dovecot's form
(`<name>.argon2id/<mailbox>`), both vault-encrypted. Hosts get only the hash, and its stored
ciphertext is reused on every render, so the rendered files do not change from one render to
the next. `coophost secrets rotate` (and the member verb `password`) gives a mailbox a new
password: it replaces both entries and counts the rotation in the member file (`rotated:`),
which is part of the unit's hash, so the next deploy applies it.
"""

from __future__ import annotations

import os
import secrets as random
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coophost.errors import ConfigError
from coophost.fsutil import atomic_write
from coophost.layout import SECRETS_DIR
from coophost.registry.catalogue import Catalogue, SecretSpec
from coophost.registry.model import VaultSettings

PASSWORD_ALPHABET = string.ascii_letters + string.digits
VAULT_HEADER = "$ANSIBLE_VAULT;"
HASH_MARK = ".argon2id"  # after a per-mailbox secret's name: the entries holding hashes
BCRYPT_MARK = ".bcrypt"  # after a hashed password's name: the entry holding its bcrypt hash
BCRYPT_ROUNDS = 10  # nginx checks it on every authenticated request: about 60 ms here
# dovecot verifies ARGON2ID with libsodium, which needs parallelism 1.
ARGON2_TIME_COST = 3
ARGON2_MEMORY_KIB = 65536
ARGON2_PARALLELISM = 1


def mailbox_hash(password: str) -> str:
    """Return `password`'s argon2id hash as dovecot reads it: `{ARGON2ID}$argon2id$...`."""
    from argon2 import PasswordHasher

    hasher = PasswordHasher(time_cost=ARGON2_TIME_COST, memory_cost=ARGON2_MEMORY_KIB,
                            parallelism=ARGON2_PARALLELISM)
    return "{ARGON2ID}" + hasher.hash(password)


def item_keys(name: str, item: str) -> tuple[str, str]:
    """Return the secrets-file entries of one per-item secret: (clear value, its hash)."""
    return f"{name}/{item}", f"{name}{HASH_MARK}/{item}"


def is_hash_entry(key: str) -> bool:
    """Whether a secrets-file entry holds a derived hash (never shown by `secrets show`)."""
    return HASH_MARK + "/" in key or key.endswith(BCRYPT_MARK)


def bcrypt_hash(password: str) -> str:
    """Return `password`'s bcrypt hash (`$2b$...`), as nginx's auth_basic reads it."""
    import bcrypt

    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(BCRYPT_ROUNDS)).decode()


def vault_password(root: Path, settings: VaultSettings) -> bytes:
    """Return the vault password: the named env variable, else the named file (made if allowed)."""
    if settings.password_env and os.environ.get(settings.password_env):
        return os.environ[settings.password_env].encode()
    if settings.password_file:
        path = password_file_path(root, settings)
        if not path.exists() and settings.create_password_file:
            encrypted = encrypted_files(root)
            if encrypted:  # a new password would lock every existing secret away for good
                raise ConfigError(
                    f"vault password file {path} is missing, but {len(encrypted)} secrets "
                    f"file(s) are encrypted with a password (first: {encrypted[0]}); "
                    "restore the password file from the co-op's safe keeping",
                    hint="coophost makes a new password file only while no secret exists")
            atomic_write(path, random.token_urlsafe(32) + "\n", 0o600)
        try:
            password = path.read_bytes().strip()
        except OSError as exc:
            raise ConfigError(f"vault password file {path}: {exc.strerror}",
                              hint=_password_hint(settings)) from None
        if password:
            return password
    raise ConfigError("no vault password available", hint=_password_hint(settings))


def encrypted_files(root: Path) -> list[Path]:
    """The co-op's secrets files that hold vault ciphertext (sorted)."""
    folder = root / SECRETS_DIR
    if not folder.is_dir():
        return []
    return [path for path in sorted(folder.glob("*.yml"))
            if path.is_file() and VAULT_HEADER in path.read_text(errors="replace")]


def check_password(root: Path, vault: Any) -> None:
    """Refuse a vault password that does not open the co-op's existing secrets.

    One ciphertext of the first secrets file is decrypted before anything new is encrypted:
    a wrong or replaced password must never start a second set of secrets that the first
    password cannot open (and the first set this one cannot).
    """
    for path in encrypted_files(root):
        try:
            data = parse_secrets_file(path.read_text())
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        for items in data.values():
            for key, text in items.items():
                try:
                    vault.decrypt(text)
                except Exception:  # AnsibleVaultError and its kin: a wrong password
                    raise ConfigError(
                        f"the vault password does not open {path} ({key}): wrong or replaced "
                        "password; nothing was encrypted",
                        hint="give the password the co-op's secrets were made with") from None
                return


def password_file_path(root: Path, settings: VaultSettings) -> Path:
    """Where coop.yml's password_file points (relative paths are relative to the co-op)."""
    assert settings.password_file is not None
    path = Path(settings.password_file).expanduser()
    return path if path.is_absolute() else root / path


def _password_hint(settings: VaultSettings) -> str:
    ways = []
    if settings.password_env:
        ways.append(f"set ${settings.password_env}")
    if settings.password_file:
        ways.append(f"write the password to {settings.password_file}")
    return " or ".join(ways) + " (coop.yml: vault)"


def generate(spec: SecretSpec) -> str:
    """Return a fresh secret value for `spec`."""
    if spec.kind in ("password", "per_mailbox_password"):
        return "".join(random.choice(PASSWORD_ALPHABET) for _ in range(spec.length))
    if spec.kind == "rsa_private_key":
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        key = rsa.generate_private_key(public_exponent=65537, key_size=spec.bits)
        return key.private_bytes(serialization.Encoding.PEM,
                                 serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption()).decode()
    if spec.kind == "ssh_ed25519_key":
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519

        return ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption()).decode()
    raise ConfigError(f"unknown secret kind {spec.kind!r}")  # pragma: no cover


def ssh_public_key(private_key: str) -> str:
    """The OpenSSH public key line (`ssh-ed25519 AAAA...`) of an OpenSSH private key."""
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_ssh_private_key(private_key.encode(), password=None)
    return key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                         serialization.PublicFormat.OpenSSH).decode()


# Secrets of the co-op's own machinery rather than of a catalogue service, by the section
# (the `service` of their SecretRef) they are kept under. Section names start with "_", which
# no catalogue service name can.
COOP_OWNER = "_coop"  # secrets/_coop.yml: host-level secrets (no member slug starts with "_")
BACKUP_SECTION = "_backup"  # in a member's secrets file: its backup passphrase
INTERNAL_SPECS = {
    BACKUP_SECTION: SecretSpec(name="passphrase", kind="password", length=40),
    "_backup_client_keys": SecretSpec(name="client_key", kind="ssh_ed25519_key"),
    "_backup_host_keys": SecretSpec(name="host_key", kind="ssh_ed25519_key"),
    "_backup_admin": SecretSpec(name="admin_key", kind="ssh_ed25519_key"),
    # The DNS update key (coophost.dns.serve): 44 letters and digits are valid base64, which
    # is what Knot and dnspython read a TSIG secret as (33 bytes).
    "_dns_tsig": SecretSpec(name="tsig", kind="password", length=44),
}


@dataclass(frozen=True)
class SecretRef:
    """A secret of one unit, rendered as its ansible-vault ciphertext, hashed by its name."""

    member: str
    service: str
    name: str
    item: str = ""  # the mailbox, for a secret kept per mailbox
    hashed: bool = False  # render the secret's stored hash (its spec's `hash`), not the secret
    # How many times it was rotated (the member file's `rotated:`): not secret, and hashed
    # with the unit, so a rotated password redeploys its unit.
    generation: int = 0

    @property
    def key(self) -> str:
        """A stable, non-secret identifier."""
        base = f"{self.member}/{self.service}/{self.name}"
        return f"{base}/{self.item}" if self.item else base

    @property
    def rotation_key(self) -> str:
        """Its key under the member file's `rotated.<service>`: `name` or `name/mailbox`."""
        return f"{self.name}/{self.item}" if self.item else self.name


class SecretStore:
    """The co-op's secrets: read, generated and written as vault ciphertext, member by member.

    Writes must happen under the co-op lock (the caller holds it).
    """

    def __init__(self, root: Path, settings: VaultSettings, catalogue: Catalogue) -> None:
        self.root = root
        self.settings = settings
        self.catalogue = catalogue
        self._vault: Any = None
        self._files: dict[str, dict[str, dict[str, str]]] = {}
        self._dirty: set[str] = set()

    @property
    def vault(self) -> Any:
        """Ansible's VaultLib with the co-op's password (loaded on first use)."""
        if self._vault is None:
            from ansible.parsing.vault import VaultLib, VaultSecret

            secret = VaultSecret(vault_password(self.root, self.settings))
            vault = VaultLib([("default", secret)])
            check_password(self.root, vault)
            self._vault = vault
        return self._vault

    def path(self, member: str) -> Path:
        """secrets/<member>.yml."""
        return self.root / SECRETS_DIR / f"{member}.yml"

    def _load(self, member: str) -> dict[str, dict[str, str]]:
        if member not in self._files:
            path = self.path(member)
            try:
                self._files[member] = parse_secrets_file(path.read_text()) \
                    if path.exists() else {}
            except ConfigError as exc:
                raise ConfigError(f"{path}: {exc}", hint=exc.hint) from None
        return self._files[member]

    def ciphertext(self, ref: SecretRef) -> str:
        """Return `ref`'s vault ciphertext, generating and encrypting the secret if it is new."""
        stored = self._load(ref.member).setdefault(ref.service, {})
        if ref.item:
            return self._item_hash(ref, stored)
        if ref.name not in stored:
            stored[ref.name] = self.vault.encrypt(generate(self._spec(ref))).decode()
            stored.pop(ref.name + BCRYPT_MARK, None)
            self._dirty.add(ref.member)
        if ref.hashed:
            return self._derived_hash(ref, stored)
        return stored[ref.name]

    def _derived_hash(self, ref: SecretRef, stored: dict[str, str]) -> str:
        """A hashed password renders as its stored bcrypt hash's ciphertext (made once)."""
        hash_key = ref.name + BCRYPT_MARK
        if hash_key not in stored:
            password = self.vault.decrypt(stored[ref.name]).decode()
            stored[hash_key] = self.vault.encrypt(bcrypt_hash(password)).decode()
            self._dirty.add(ref.member)
        return stored[hash_key]

    def _spec(self, ref: SecretRef) -> SecretSpec:
        if ref.service in INTERNAL_SPECS:
            return INTERNAL_SPECS[ref.service]
        return next(s for s in self.catalogue.services[ref.service].secrets
                    if s.name == ref.name)

    def _item_hash(self, ref: SecretRef, stored: dict[str, str]) -> str:
        """A per-mailbox secret renders as its stored hash's ciphertext (made on first need)."""
        clear_key, hash_key = item_keys(ref.name, ref.item)
        if clear_key not in stored:
            password = generate(self._spec(ref))
            stored[clear_key] = self.vault.encrypt(password).decode()
            stored.pop(hash_key, None)
            self._dirty.add(ref.member)
        if hash_key not in stored:
            password = self.vault.decrypt(stored[clear_key]).decode()
            stored[hash_key] = self.vault.encrypt(mailbox_hash(password)).decode()
            self._dirty.add(ref.member)
        return stored[hash_key]

    def replace(self, ref: SecretRef) -> str:
        """Give `ref` a new generated value (and its hash, if it has one); return the value.

        Kept in memory until `save`; the old value and hash are gone from the file then.
        """
        stored = self._load(ref.member).setdefault(ref.service, {})
        password = generate(self._spec(ref))
        if ref.item:
            clear_key, hash_key = item_keys(ref.name, ref.item)
            stored[clear_key] = self.vault.encrypt(password).decode()
            stored[hash_key] = self.vault.encrypt(mailbox_hash(password)).decode()
        else:
            stored[ref.name] = self.vault.encrypt(password).decode()
            stored.pop(ref.name + BCRYPT_MARK, None)
            if ref.hashed:
                stored[ref.name + BCRYPT_MARK] = self.vault.encrypt(
                    bcrypt_hash(password)).decode()
        self._dirty.add(ref.member)
        return password

    def stored(self, member: str, service: str, name: str) -> str | None:
        """One stored secret, decrypted, or None when it was never generated.

        For coophost's own use (a service's hooks derive DNS values from it); never printed.
        """
        text = self._load(member).get(service, {}).get(name)
        return None if text is None else str(self.vault.decrypt(text).decode())

    def value(self, ref: SecretRef) -> str:
        """`ref`'s clear value, generated (and kept for `save`) on first need. Never printed."""
        return str(self.vault.decrypt(self.ciphertext(ref)).decode())

    def public_key(self, ref: SecretRef) -> str:
        """The OpenSSH public key of an ssh_ed25519_key secret (generated on first need)."""
        return ssh_public_key(self.value(ref))

    def reveal(self, member: str) -> dict[str, dict[str, str]]:
        """Every secret of `member`, decrypted (for `coophost secrets show` only).

        Derived hashes are left out: they are what hosts get, not what a person needs.
        """
        return {service: {name: self.vault.decrypt(text).decode()
                          for name, text in items.items() if not is_hash_entry(name)}
                for service, items in self._load(member).items()}

    def save(self) -> list[Path]:
        """Write the files of members that got new secrets; returns their paths."""
        written = []
        for member in sorted(self._dirty):
            path = self.path(member)
            atomic_write(path, format_secrets_file(member, self._files[member]), 0o600)
            written.append(path)
        self._dirty.clear()
        return written


def format_secrets_file(member: str, data: dict[str, dict[str, str]]) -> str:
    """Return a secrets file: YAML with inline `!vault` values (readable by include_vars)."""
    lines = [f"# Secrets of member {member}, ansible-vault encrypted. Written by coophost;",
             "# read one with `coophost secrets show`.", ]
    for service in sorted(data):
        lines.append(f"{service}:")
        for name in sorted(data[service]):
            lines.append(f"  {name}: !vault |")
            lines.extend(f"    {line}" for line in data[service][name].strip().splitlines())
    return "\n".join(lines) + "\n"


def parse_secrets_file(text: str) -> dict[str, dict[str, str]]:
    """Read what `format_secrets_file` wrote (ciphertexts stay encrypted)."""
    result: dict[str, dict[str, str]] = {}
    service = name = None
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not line.startswith(" ") and line.endswith(":"):
            service = line[:-1]
            result[service] = {}
        elif line.startswith("  ") and not line.startswith("   ") and service is not None:
            name = line.strip().split(":", 1)[0]
            result[service][name] = ""
        elif line.startswith("    ") and service is not None and name is not None:
            result[service][name] += line.strip() + "\n"
        else:
            raise ConfigError(f"secrets file: unexpected line {line[:40]!r}")
    for items in result.values():
        for key, value in items.items():
            if not value.startswith(VAULT_HEADER):
                raise ConfigError(f"secrets file: {key} is not vault-encrypted")
    return result
