"""Lab-made artifacts: a release tarball signed with a lab OpenPGP key, as an upstream would.

This machine reaches no upstream release server, so the lab proves the artifact path with
artifacts it makes itself: a key generated in a throw-away GnuPG home (never the user's), a
tarball, its detached armored signature and its SHA-256, and the public key to put in the
co-op's `artifacts/keys/`. Everything `coophost artifacts` then does with them (download over
HTTP, gpgv, SHA-256, store, serve, the host's own check) is the real path.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
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


@contextlib.contextmanager
def _short_home(home: Path) -> Iterator[Path]:
    """`home` under a short path (a symlink in a fresh temp folder), its agent stopped after.

    gpg-agent's socket lives in the home folder when /run/user/<uid> does not exist (root in
    CI), and a unix socket's path may not exceed 107 bytes: a home deep in a checkout would
    fail. The agent a signing starts is stopped at the end, so none outlives the command.
    """
    scratch = Path(tempfile.mkdtemp(prefix="coophost-g"))
    link = scratch / "h"
    link.symlink_to(home.resolve())
    try:
        yield link
    finally:
        gpgconf = shutil.which("gpgconf")
        if gpgconf is not None:
            subprocess.run([gpgconf, "--homedir", str(link), "--kill", "all"],
                           capture_output=True, check=False, timeout=30)
        shutil.rmtree(scratch, ignore_errors=True)


def _gpg(home: Path, *args: str, data: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    gpg = shutil.which("gpg")
    if gpg is None:
        raise EnvironmentProblem("gpg is missing (Debian package gnupg)")
    with _short_home(home) as short:
        return subprocess.run([gpg, "--batch", "--no-options", "--homedir", str(short), *args],
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
    """A `<name>-<version>.tar.gz` holding `files` under `<name>/`.

    Byte for byte the same for the same files (fixed times and owners, no gzip timestamp), so
    its SHA-256 is stable across runs.
    """
    target = folder / f"{name}-{version}.tar.gz"
    with target.open("wb") as raw, \
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as packed, \
            tarfile.open(fileobj=packed, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel, content in sorted(files.items()):
            info = tarfile.TarInfo(f"{name}/{rel}")
            info.size = len(content)
            info.mtime = 1_700_000_000
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(content))
    return target


LAB_RELEASE = "lab-release"
LAB_VERSION = "1.0"
LAB_FILES = {
    "README": b"A release the coophost lab makes and signs itself, to prove the artifact path\n"
              b"(download, gpgv, SHA-256, store, mirror, host check) where no upstream release\n"
              b"server is reachable.\n",
    "bin/hello": b"#!/bin/sh\necho hello from the co-op's mirror\n",
}


@dataclass(frozen=True)
class LabRelease:
    """What `lab artifact` prepared and fetched."""

    name: str
    version: str
    sha256: str
    signer: str
    status: str  # the fetch's outcome: fetched | stored | refused | unreachable
    problems: list[str]
    ca_file: Path  # the lab ACME CA's root, for `artifacts probe --ca-file`


def _lab_key(folder: Path) -> SigningKey:
    """The lab's release key, made once per lab and kept in its private state folder."""
    marker = folder / "fingerprint"
    if marker.is_file() and (folder / "gnupg").is_dir() and (folder / "signer.asc").is_file():
        return SigningKey(folder / "gnupg", marker.read_text().strip(), folder / "signer.asc")
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(mode=0o700, parents=True)
    key = make_key(folder)
    marker.write_text(key.fingerprint + "\n")
    return key


def lab_release(inventory: Path, ca_pem: str) -> LabRelease:
    """Make, sign and fetch the lab's release into the co-op's store, as a sysadmin would.

    The release is served for the fetch only, over HTTP on 127.0.0.1; the catalogue entry and
    the public key go into the co-op's artifacts/ (the lab's: git-ignored), the key stays in
    the lab's state folder. `ca_pem` (the lab ACME CA's root) is written beside it.
    """
    import functools
    import http.server
    import threading

    from coophost.artifacts import catalogue, store
    from coophost.fsutil import atomic_write
    from coophost.layout import STATE_DIR
    from coophost.lock import coop_lock
    from coophost.registry.yamlio import rt_dump, rt_load

    state = inventory / STATE_DIR / "lab"
    key = _lab_key(state / "release-key")
    www = state / "release-www"
    if www.exists():
        shutil.rmtree(www)
    www.mkdir(parents=True)
    signed = sign(key, make_release(www, LAB_RELEASE, LAB_VERSION, LAB_FILES))

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            return

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(www)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        folder = inventory / catalogue.ARTIFACTS_DIR
        (folder / catalogue.KEYS_DIR).mkdir(parents=True, exist_ok=True)
        atomic_write(folder / catalogue.KEYS_DIR / f"{LAB_RELEASE}.asc", key.public.read_bytes())
        path = folder / catalogue.CATALOGUE_FILE
        with coop_lock(inventory, purpose="lab artifact", name=store.LOCK_NAME):
            document = rt_load(path.read_text()) if path.is_file() else None
            if not document:
                document = rt_load("# The lab's own release (coophost lab artifact).\n"
                                   "artifacts: {}\n")
            document["artifacts"][LAB_RELEASE] = {
                "version": LAB_VERSION,
                "urls": [f"http://127.0.0.1:{server.server_address[1]}/{signed.path.name}"],
                "sha256": signed.sha256, "signer": key.fingerprint,
                "keyring": f"{catalogue.KEYS_DIR}/{LAB_RELEASE}.asc"}
            atomic_write(path, rt_dump(document))
            entry = catalogue.load(inventory)[LAB_RELEASE]
            [outcome] = store.fetch(inventory, [entry])
    finally:
        server.shutdown()
        server.server_close()
    ca_file = state / "acme-roots.pem"
    atomic_write(ca_file, ca_pem)
    return LabRelease(LAB_RELEASE, LAB_VERSION, signed.sha256, key.fingerprint, outcome.status,
                      outcome.problems, ca_file)


def forget_lab_release(inventory: Path) -> None:
    """Undo `lab_release` (for `lab down`): its catalogue entry, key and stored copy.

    Entries a sysadmin added to the catalogue stay; the artifacts/ folder goes only when the
    lab's release was all it held.
    """
    from coophost.artifacts import catalogue
    from coophost.artifacts.store import store_root
    from coophost.fsutil import atomic_write
    from coophost.registry.yamlio import rt_dump, rt_load

    shutil.rmtree(store_root(inventory) / LAB_RELEASE, ignore_errors=True)
    folder = inventory / catalogue.ARTIFACTS_DIR
    path = folder / catalogue.CATALOGUE_FILE
    key = folder / catalogue.KEYS_DIR / f"{LAB_RELEASE}.asc"
    if not path.is_file():
        return
    document = rt_load(path.read_text())
    entries = (document or {}).get("artifacts") or {}
    if LAB_RELEASE not in entries:
        return
    del entries[LAB_RELEASE]
    key.unlink(missing_ok=True)
    others = [p for p in folder.rglob("*") if p.is_file() and p != path]
    if not entries and not others:
        shutil.rmtree(folder)
    else:
        atomic_write(path, rt_dump(document))
