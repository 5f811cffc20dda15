"""The controller's artifact store: download, verify (signature and SHA-256), keep, re-check.

Layout, in the co-op's state folder (git-ignored: these are large files, bound by the
catalogue in git):

    .coophost/artifacts/<name>/<version>/<file>
                                        <file><signature suffix>
                                        manifest.json   what was checked, when, from where

An artifact enters the store only after both checks pass on the downloaded bytes:
  1. `gpgv` with only the catalogue's keyring accepts the detached signature, and the status
     line VALIDSIG names the pinned primary-key fingerprint (a good signature by any other key
     of the keyring is refused);
  2. the file's SHA-256 equals the catalogue's.
The download goes to a private folder beside the store and is renamed into place as a whole;
on any failure that folder is deleted, so a refused file is never served. `verify` re-runs both
checks on what is stored and removes anything that fails them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from coophost.artifacts.catalogue import ARTIFACTS_DIR, Artifact
from coophost.errors import EXIT_PENDING, EXIT_UNREACHABLE, CoophostError, EnvironmentProblem
from coophost.fsutil import atomic_write
from coophost.layout import STATE_DIR

STORE_DIR = "artifacts"  # under .coophost/
MANIFEST = "manifest.json"
LOCK_NAME = "artifacts.lock"  # fetches do not hold the co-op's deploy lock
TIMEOUT = 60.0  # seconds without progress before a download is given up
CHUNK = 1024 * 1024
SIGNATURE_MAX = 64 * 1024


class ArtifactRefused(CoophostError):
    """A downloaded or stored artifact failed its signature or SHA-256 check (exit 1)."""

    exit_code = EXIT_PENDING


class DownloadFailed(CoophostError):
    """No URL of an artifact could be downloaded (exit 4)."""

    exit_code = EXIT_UNREACHABLE


@dataclass
class Outcome:
    """What fetch or verify did with one artifact."""

    name: str
    version: str
    status: str  # fetched | stored | refused | missing | unreachable | removed
    problems: list[str] = field(default_factory=list)
    url: str | None = None
    size: int | None = None


def store_root(inventory: Path) -> Path:
    """The store's folder in the co-op's state folder."""
    return inventory / STATE_DIR / STORE_DIR


def stored_folder(inventory: Path, artifact: Artifact) -> Path:
    """Where an artifact's verified version lives."""
    return store_root(inventory) / artifact.name / artifact.version


def keyring_path(inventory: Path, artifact: Artifact) -> Path:
    """The catalogue's keyring file for `artifact`."""
    return (inventory / ARTIFACTS_DIR / artifact.keyring).resolve()


# -- checks -----------------------------------------------------------------------------------
def sha256_of(path: Path) -> str:
    """The SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _binary_keyring(source: Path, workdir: Path) -> Path:
    """Gpgv reads binary keyrings only: an armored key is dearmored into `workdir` first."""
    head = source.read_bytes()[:64]
    if not head.lstrip().startswith(b"-----BEGIN PGP"):
        return source
    gpg = shutil.which("gpg")
    if gpg is None:
        raise EnvironmentProblem("gpg is missing (Debian package gnupg): it dearmors the "
                                 f"keyring {source.name}")
    out = workdir / "keyring.gpg"
    home = workdir / "gnupg"
    home.mkdir(mode=0o700)
    result = subprocess.run([gpg, "--batch", "--no-options", "--homedir", str(home),
                             "--dearmor", "--output", str(out), str(source)],
                            capture_output=True, text=True, check=False, timeout=60)
    if result.returncode != 0 or not out.is_file():
        raise ArtifactRefused(f"keyring {source.name} is not an OpenPGP key: "
                              f"{result.stderr.strip()[:200]}")
    return out


def parse_gpgv_status(status: str) -> tuple[list[str], list[str], list[str]]:
    """Read gpgv's --status-fd output (pure).

    Returns the primary-key fingerprints of valid signatures, the key IDs of bad ones, and
    the key IDs whose public key is missing.
    """
    valid: list[str] = []
    bad: list[str] = []
    missing: list[str] = []
    for line in status.splitlines():
        words = line.split()
        if len(words) < 3 or words[0] != "[GNUPG:]":
            continue
        if words[1] == "VALIDSIG":
            # VALIDSIG <fpr> <date> <ts> <expire> <ver> <rsv> <pkalgo> <hashalgo> <class> <primary>
            valid.append(words[-1].upper() if len(words) >= 12 else words[2].upper())
        elif words[1] == "BADSIG":
            bad.append(words[2])
        elif words[1] in ("NO_PUBKEY", "ERRSIG"):
            missing.append(words[2])
    return valid, bad, missing


def signature_problems(artifact: Artifact, data: Path, signature: Path, keyring: Path,
                       workdir: Path) -> list[str]:
    """Check `signature` over `data` with only `keyring`; each problem as a sentence."""
    gpgv = shutil.which("gpgv")
    if gpgv is None:
        raise EnvironmentProblem("gpgv is missing (Debian package gpgv)")
    binary = _binary_keyring(keyring, workdir)
    # --status-fd 1: machine-readable lines on stdout; an absolute keyring path (gpgv looks a
    # bare name up in its home folder), and only that keyring
    result = subprocess.run([gpgv, "--status-fd", "1", "--keyring", str(binary.resolve()),
                             str(signature), str(data)],
                            capture_output=True, text=True, check=False, timeout=600,
                            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                                 "GNUPGHOME": str(workdir), "LC_ALL": "C"})
    valid, bad, missing = parse_gpgv_status(result.stdout)
    if bad:
        return [f"signature: BAD signature by key {bad[0]}: the file is not what was signed"]
    if missing and not valid:
        return [f"signature: made by key {missing[0]}, which is not in the keyring "
                f"{artifact.keyring} (not the pinned signer)"]
    if result.returncode != 0 or not valid:
        why = result.stderr.strip().splitlines()
        return [f"signature: gpgv refused it (exit {result.returncode}"
                + (f": {why[-1][:200]}" if why else "") + ")"]
    if artifact.signer not in valid:
        return [f"signature: good, but made by {valid[0]}, not the pinned signer "
                f"{artifact.signer}"]
    return []


def check_files(inventory: Path, artifact: Artifact, data: Path, signature: Path,
                workdir: Path) -> list[str]:
    """Both checks on a file and its signature; every problem found (empty: verified)."""
    problems = signature_problems(artifact, data, signature,
                                  keyring_path(inventory, artifact), workdir)
    digest = sha256_of(data)
    if digest != artifact.sha256:
        problems.append(f"sha256: the file's is {digest}, the catalogue's {artifact.sha256}")
    return problems


# -- download ---------------------------------------------------------------------------------
def _download(url: str, target: Path, limit: int) -> int:
    """Stream `url` into `target`; at most `limit` bytes. Returns the size."""
    if not url.startswith(("https://", "http://")):  # the catalogue allows no other scheme
        raise ValueError(f"not an http(s) URL: {url}")
    request = urllib.request.Request(  # noqa: S310 - the scheme is checked just above
        url, headers={"User-Agent": "coophost-artifacts"})
    size = 0
    with urllib.request.urlopen(request, timeout=TIMEOUT) as response, \
            target.open("wb") as out:  # noqa: S310 - the scheme is checked just above
        declared = response.headers.get("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise ValueError(f"it is {int(declared)} bytes, over the limit of {limit}")
        while chunk := response.read(CHUNK):
            size += len(chunk)
            if size > limit:
                raise ValueError(f"it grew past the limit of {limit} bytes")
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    return size


def _fetch_one(inventory: Path, artifact: Artifact, incoming: Path) -> Outcome:
    """Download the file and its signature from the first URL that serves both, then check."""
    errors: list[str] = []
    data = incoming / artifact.file
    signature = incoming / artifact.signature_file
    for url, sig_url in zip(artifact.urls, artifact.signature_urls, strict=True):
        try:
            size = _download(url, data, artifact.max_bytes)
            _download(sig_url, signature, SIGNATURE_MAX)
        except (OSError, ValueError, urllib.error.URLError) as exc:
            errors.append(f"{url}: {getattr(exc, 'reason', None) or exc}")
            for path in (data, signature):
                path.unlink(missing_ok=True)
            continue
        problems = check_files(inventory, artifact, data, signature, incoming)
        outcome = Outcome(artifact.name, artifact.version, "refused" if problems else "fetched",
                          problems, url, size)
        return outcome
    return Outcome(artifact.name, artifact.version, "unreachable", errors)


def _install(inventory: Path, artifact: Artifact, incoming: Path, outcome: Outcome) -> None:
    """Move the checked files into the store as one folder (rename), with their manifest."""
    target = stored_folder(inventory, artifact)
    ready = incoming.parent / f".ready-{artifact.name}-{os.getpid()}"
    ready.mkdir(mode=0o755)
    for name in (artifact.file, artifact.signature_file):
        os.replace(incoming / name, ready / name)
        os.chmod(ready / name, 0o644)
    atomic_write(ready / MANIFEST, json.dumps({
        "name": artifact.name, "version": artifact.version, "file": artifact.file,
        "signature": artifact.signature_file, "sha256": artifact.sha256,
        "signer": artifact.signer, "size": outcome.size, "url": outcome.url,
        "verified_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
        indent=2, sort_keys=True) + "\n")
    target.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if target.exists():
        old = target.parent / f".old-{artifact.version}-{os.getpid()}"
        os.replace(target, old)
    os.replace(ready, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _stored_ok(inventory: Path, artifact: Artifact, workdir: Path) -> list[str] | None:
    """None when nothing is stored; else the problems of what is (empty: verified)."""
    folder = stored_folder(inventory, artifact)
    data = folder / artifact.file
    signature = folder / artifact.signature_file
    if not folder.is_dir():
        return None
    if not data.is_file() or not signature.is_file():
        return ["the stored copy is incomplete"]
    return check_files(inventory, artifact, data, signature, workdir)


LEFTOVER_PREFIXES = (".incoming-", ".verify-", ".ready-", ".old-")


def sweep_leftovers(root: Path) -> None:
    """Remove the work folders a killed fetch or verify left.

    The caller holds the lock, so none of them is in use: downloads never checked, or a copy
    half moved in.
    """
    names = [p for p in root.iterdir() if p.is_dir()]
    for folder in [root, *names]:  # the store's own level and each artifact's
        if not folder.is_dir():
            continue  # a leftover of the store's level, removed just before
        for item in list(folder.iterdir()):
            if item.is_dir() and item.name.startswith(LEFTOVER_PREFIXES):
                shutil.rmtree(item, ignore_errors=True)


def fetch(inventory: Path, artifacts: Iterable[Artifact], *, force: bool = False
          ) -> list[Outcome]:
    """Bring each artifact into the store, verified.

    An already stored copy that still passes both checks is kept as it is unless `force`.
    The caller holds the artifacts lock.
    """
    root = store_root(inventory)
    root.mkdir(parents=True, exist_ok=True)
    sweep_leftovers(root)
    outcomes = []
    for artifact in artifacts:
        with tempfile.TemporaryDirectory(prefix=".incoming-", dir=root) as tmp:
            incoming = Path(tmp)
            present = None if force else _stored_ok(inventory, artifact, incoming)
            if present == []:
                folder = stored_folder(inventory, artifact)
                outcomes.append(Outcome(artifact.name, artifact.version, "stored",
                                        size=(folder / artifact.file).stat().st_size))
                continue
            outcome = _fetch_one(inventory, artifact, incoming)
            if outcome.status == "fetched":
                _install(inventory, artifact, incoming, outcome)
            outcomes.append(outcome)
    return outcomes


def verify(inventory: Path, artifacts: Iterable[Artifact]) -> list[Outcome]:
    """Re-check what is stored; a copy that fails is removed (it must never be served)."""
    root = store_root(inventory)
    outcomes = []
    for artifact in artifacts:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".verify-", dir=root) as tmp:
            problems = _stored_ok(inventory, artifact, Path(tmp))
        if problems is None:
            outcomes.append(Outcome(artifact.name, artifact.version, "missing"))
        elif problems:
            shutil.rmtree(stored_folder(inventory, artifact), ignore_errors=True)
            outcomes.append(Outcome(artifact.name, artifact.version, "removed", problems))
        else:
            size = (stored_folder(inventory, artifact) / artifact.file).stat().st_size
            outcomes.append(Outcome(artifact.name, artifact.version, "stored", size=size))
    return outcomes


def listing(inventory: Path, artifacts: Iterable[Artifact]) -> list[dict[str, object]]:
    """Each catalogue entry with what the store holds of it (no check is run: `verify` does).

    `stored`: a copy whose manifest (written only after both checks passed) names the
    catalogue's SHA-256 is there.
    """
    rows = []
    for artifact in artifacts:
        folder = stored_folder(inventory, artifact)
        manifest = None
        with contextlib.suppress(OSError, ValueError):
            manifest = json.loads((folder / MANIFEST).read_text())
        others = []
        parent = folder.parent
        if parent.is_dir():
            others = sorted(p.name for p in parent.iterdir()
                            if p.is_dir() and not p.name.startswith(".")
                            and p.name != artifact.version)
        rows.append({"name": artifact.name, "version": artifact.version,
                     "stored": manifest is not None and manifest.get("sha256") == artifact.sha256
                     and (folder / artifact.file).is_file(),
                     "size": manifest.get("size") if manifest else None,
                     "verified_at": manifest.get("verified_at") if manifest else None,
                     "signer": artifact.signer, "sha256": artifact.sha256,
                     "other_versions": others})
    return rows


def unlisted(inventory: Path, artifacts: Iterable[Artifact]) -> list[Path]:
    """Stored versions (and whole artifacts) the catalogue no longer names."""
    root = store_root(inventory)
    if not root.is_dir():
        return []
    wanted = {(a.name, a.version) for a in artifacts}
    names = {name for name, _ in wanted}
    found = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if folder.name not in names:
            found.append(folder)
            continue
        found.extend(sorted(v for v in folder.iterdir() if v.is_dir()
                            and not v.name.startswith(".") and (folder.name, v.name) not in wanted))
    return found
