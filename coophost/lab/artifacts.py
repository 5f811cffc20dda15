"""Lab-made artifacts: a release tarball signed with a lab OpenPGP key, as an upstream would.

This machine reaches no upstream release server, so the lab proves the artifact path with
artifacts it makes itself: a key generated in a throw-away GnuPG home (never the user's), a
tarball, its detached armored signature and its SHA-256, and the public key to put in the
co-op's `artifacts/keys/`. Everything `coophost artifacts` then does with them (download over
HTTP, gpgv, SHA-256, store, serve, the host's own check) is the real path.
"""

from __future__ import annotations

import hashlib
import io
import re
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from coophost.errors import EnvironmentProblem


@dataclass(frozen=True)
class SigningKey:
    """A lab signing key in its own GnuPG home."""

    home: Path
    fingerprint: str  # primary key, 40 upper-case hex digits
    public: Path  # the armored public key


@dataclass(frozen=True)
class SignedFile:
    """A file with its detached signature and SHA-256."""

    path: Path
    signature: Path
    sha256: str


def _gpg(home: Path, *args: str, data: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    gpg = shutil.which("gpg")
    if gpg is None:
        raise EnvironmentProblem("gpg is missing (Debian package gnupg)")
    return subprocess.run([gpg, "--batch", "--no-options", "--homedir", str(home), *args],
                          input=data, capture_output=True, check=True, timeout=120)


def make_key(folder: Path, name: str = "coophost lab release signing") -> SigningKey:
    """Generate an ed25519 signing key (no passphrase, no expiry) in `folder`/gnupg."""
    home = folder / "gnupg"
    home.mkdir(mode=0o700, parents=True, exist_ok=False)
    _gpg(home, "--passphrase", "", "--quick-gen-key", f"{name} <release@lab.invalid>",
         "ed25519", "sign", "never")
    listing = _gpg(home, "--with-colons", "--list-keys").stdout.decode()
    fingerprints = re.findall(r"^fpr:+([0-9A-F]{40}):", listing, flags=re.MULTILINE)
    if not fingerprints:
        raise EnvironmentProblem("gpg made no key")
    public = folder / "signer.asc"
    public.write_bytes(_gpg(home, "--armor", "--export", fingerprints[0]).stdout)
    return SigningKey(home, fingerprints[0], public)


def sign(key: SigningKey, path: Path) -> SignedFile:
    """Sign `path` (detached, armored: `<path>.asc`) and hash it."""
    signature = path.with_name(path.name + ".asc")
    signature.unlink(missing_ok=True)
    _gpg(key.home, "--local-user", key.fingerprint, "--armor", "--detach-sign",
         "--output", str(signature), str(path))
    return SignedFile(path, signature, hashlib.sha256(path.read_bytes()).hexdigest())


def make_release(folder: Path, name: str, version: str, files: dict[str, bytes]) -> Path:
    """A `<name>-<version>.tar.gz` holding `files` under `<name>/` (fixed times, owners)."""
    target = folder / f"{name}-{version}.tar.gz"
    with tarfile.open(target, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        for rel, content in sorted(files.items()):
            info = tarfile.TarInfo(f"{name}/{rel}")
            info.size = len(content)
            info.mtime = 1_700_000_000
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(content))
    return target
