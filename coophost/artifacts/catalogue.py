"""The co-op's catalogue of upstream artifacts: what it mirrors, from where, bound by what.

Kept in the co-op directory (in git, reviewed like the rest of the registry):

    artifacts/catalogue.yml
    artifacts/keys/<signer>.asc      the signers' public keys (armored or binary OpenPGP)

    artifacts:
      nextcloud:
        version: "34.0.4"
        urls:                        # tried in order; the first that answers is used
          - https://github.com/nextcloud-releases/server/releases/download/v34.0.4/nextcloud-34.0.4.tar.bz2
          - https://download.nextcloud.com/server/releases/nextcloud-34.0.4.tar.bz2
        sha256: <64 hex digits>      # the file's SHA-256, as the release publishes it
        signer: 2880 6A87 8AE4 23A2 8372  792E D758 99B9 A724 937A
        keyring: keys/nextcloud.asc  # under artifacts/; must hold the signer's key
        # signature: .asc            # appended to each URL for the detached signature
        # file: nextcloud-34.0.4.tar.bz2   # the stored name (default: the first URL's)
        # max_size_mb: 4096

What binds an artifact is its SHA-256 and its signature by the pinned key, never its URL: a
mirror may serve it over plain HTTP. Parsing is pure: `parse` takes the document and the keys
folder's listing and raises ValidationError (exit 2) naming the file, field and value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from coophost.errors import ValidationError

ARTIFACTS_DIR = "artifacts"  # in the co-op directory
CATALOGUE_FILE = "catalogue.yml"  # under artifacts/
KEYS_DIR = "keys"  # under artifacts/
LABEL = f"{ARTIFACTS_DIR}/{CATALOGUE_FILE}"

NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,39}$")
VERSION_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+~-]{0,63}$")
FILE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
FINGERPRINT_RE = re.compile(r"^[0-9A-F]{40}$")
SUFFIX_RE = re.compile(r"^\.[a-z0-9]{1,8}$")
DEFAULT_SIGNATURE = ".asc"
DEFAULT_MAX_MB = 4096
MAX_MB = 65536
FIELDS = {"version", "urls", "sha256", "signer", "keyring", "signature", "file", "max_size_mb"}


@dataclass(frozen=True)
class Artifact:
    """One catalogue entry, checked."""

    name: str
    version: str
    urls: tuple[str, ...]
    sha256: str  # lower-case hex
    signer: str  # the pinned primary-key fingerprint, 40 upper-case hex digits
    keyring: str  # relative to artifacts/, under keys/
    signature: str  # suffix of the detached signature's URL
    file: str  # the stored file name
    max_bytes: int

    @property
    def signature_urls(self) -> tuple[str, ...]:
        """Where the detached signature of each URL is."""
        return tuple(url + self.signature for url in self.urls)

    @property
    def signature_file(self) -> str:
        """The stored name of the detached signature."""
        return self.file + self.signature


def fingerprint(text: str) -> str:
    """A fingerprint as written (spaces, lower case, 0x) in its canonical form."""
    cleaned = re.sub(r"\s+", "", text).upper()
    return cleaned[2:] if cleaned.startswith("0X") else cleaned


def _url(value: object, field: str) -> str:
    if not isinstance(value, str) or not value or len(value) > 2048:
        raise ValidationError(LABEL, field, value, "must be an http(s) URL")
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValidationError(LABEL, field, value, "must be an http(s) URL with a host name")
    if parts.username or parts.password:
        raise ValidationError(LABEL, field, value,
                              "must not carry credentials (they would sit in git)")
    if any(ch.isspace() or ord(ch) < 32 for ch in value):
        raise ValidationError(LABEL, field, value, "must not contain spaces or control "
                              "characters")
    if parts.query or parts.fragment:
        raise ValidationError(LABEL, field, value, "must not have a query or fragment (the "
                              "signature's URL is this one with the signature suffix)")
    return value


def _entry(name: str, raw: object, keys: frozenset[str]) -> Artifact:
    where = f"artifacts.{name}"
    if not NAME_RE.match(name):
        raise ValidationError(LABEL, where, name, "an artifact's name is lower-case letters, "
                              "digits and '-', starting with a letter (at most 40)")
    if not isinstance(raw, Mapping):
        raise ValidationError(LABEL, where, raw, "must be a mapping of fields")
    unknown = sorted(set(map(str, raw)) - FIELDS)
    if unknown:
        raise ValidationError(LABEL, f"{where}.{unknown[0]}", raw[unknown[0]],
                              f"unknown field (known: {', '.join(sorted(FIELDS))})")
    for field in ("version", "urls", "sha256", "signer", "keyring"):
        if field not in raw:
            raise ValidationError(LABEL, f"{where}.{field}", None, "is required")
    version = raw["version"]
    if not isinstance(version, str) or not VERSION_RE.match(version):
        raise ValidationError(LABEL, f"{where}.version", version, "must be a quoted version "
                              "string (letters, digits, '.', '+', '~', '-')")
    urls = raw["urls"]
    if isinstance(urls, str) or not isinstance(urls, list) or not urls or len(urls) > 16:
        raise ValidationError(LABEL, f"{where}.urls", urls, "must be a list of 1 to 16 URLs")
    checked = tuple(_url(url, f"{where}.urls[{i}]") for i, url in enumerate(urls))
    sha256 = raw["sha256"]
    if not isinstance(sha256, str) or not SHA256_RE.match(sha256.lower()):
        raise ValidationError(LABEL, f"{where}.sha256", sha256, "must be 64 hex digits")
    signer = raw["signer"]
    if not isinstance(signer, str) or not FINGERPRINT_RE.match(fingerprint(signer)):
        raise ValidationError(LABEL, f"{where}.signer", signer, "must be the signing key's "
                              "full fingerprint (40 hex digits; a short key ID is not enough)")
    keyring = raw["keyring"]
    path = PurePosixPath(keyring) if isinstance(keyring, str) else None
    if (path is None or path.is_absolute() or ".." in path.parts or len(path.parts) != 2
            or path.parts[0] != KEYS_DIR):
        raise ValidationError(LABEL, f"{where}.keyring", keyring,
                              f"must name a file in {ARTIFACTS_DIR}/{KEYS_DIR}/ "
                              f"(written {KEYS_DIR}/<file>)")
    if path.name not in keys:
        raise ValidationError(LABEL, f"{where}.keyring", keyring,
                              f"no such file in {ARTIFACTS_DIR}/{KEYS_DIR}/",
                              hint="add the signer's public key there (from the upstream's "
                                   "site), and check its fingerprint before committing it")
    signature = raw.get("signature", DEFAULT_SIGNATURE)
    if not isinstance(signature, str) or not SUFFIX_RE.match(signature):
        raise ValidationError(LABEL, f"{where}.signature", signature,
                              "must be the detached signature's suffix, such as .asc or .sig")
    file = raw.get("file", PurePosixPath(urlsplit(checked[0]).path).name)
    if not isinstance(file, str) or not FILE_RE.match(file) or file.endswith(".tmp"):
        raise ValidationError(LABEL, f"{where}.file", file, "must be a plain file name "
                              "(letters, digits, '.', '_', '+', '-'); set `file:` when the URL "
                              "does not end in one")
    size = raw.get("max_size_mb", DEFAULT_MAX_MB)
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_MB:
        raise ValidationError(LABEL, f"{where}.max_size_mb", size,
                              f"must be a whole number of MB from 1 to {MAX_MB}")
    return Artifact(name=name, version=version, urls=checked, sha256=sha256.lower(),
                    signer=fingerprint(signer), keyring=str(path), signature=signature,
                    file=file, max_bytes=size * 1024 * 1024)


def parse(document: Any, keys: frozenset[str]) -> dict[str, Artifact]:
    """Check the catalogue's document; `keys` is the file names found in artifacts/keys/."""
    if document is None:
        return {}
    if not isinstance(document, Mapping) or set(map(str, document)) - {"artifacts"}:
        raise ValidationError(LABEL, "(document)", document,
                              "must be a mapping with one key, `artifacts`")
    entries = document.get("artifacts") or {}
    if not isinstance(entries, Mapping):
        raise ValidationError(LABEL, "artifacts", entries, "must map names to entries")
    return {str(name): _entry(str(name), raw, keys) for name, raw in entries.items()}


def load(inventory: Path) -> dict[str, Artifact]:
    """The co-op's catalogue (empty when it has none)."""
    from coophost.registry.yamlio import load_file

    folder = inventory / ARTIFACTS_DIR
    path = folder / CATALOGUE_FILE
    if not path.is_file():
        return {}
    keys_dir = folder / KEYS_DIR
    keys = frozenset(p.name for p in keys_dir.iterdir() if p.is_file()) if keys_dir.is_dir() \
        else frozenset()
    return parse(load_file(path, LABEL), keys)


def select(catalogue: Mapping[str, Artifact], names: tuple[str, ...]) -> list[Artifact]:
    """The entries `names` asks for (all when empty); an unknown name is a usage error."""
    if not names:
        return [catalogue[n] for n in sorted(catalogue)]
    missing = [n for n in names if n not in catalogue]
    if missing:
        known = ", ".join(sorted(catalogue)) or "none"
        raise ValidationError(LABEL, "artifacts", missing[0],
                              f"no such artifact in the catalogue (known: {known})")
    return [catalogue[n] for n in dict.fromkeys(names)]
