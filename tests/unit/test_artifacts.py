"""The artifact store on the controller: real gpg keys, real gpgv, real HTTP on 127.0.0.1.

Nothing is mocked: a lab key signs a lab tarball, a local HTTP server serves it, and
`coophost artifacts fetch|verify|list` download, check and store (or refuse) it.
"""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from coophost.artifacts import catalogue, store
from coophost.errors import ValidationError
from coophost.lab import artifacts as labart

pytestmark = pytest.mark.skipif(shutil.which("gpg") is None or shutil.which("gpgv") is None,
                                reason="gpg and gpgv are needed (Debian packages gnupg, gpgv)")


class _Quiet(http.server.SimpleHTTPRequestHandler):
    requests: ClassVar[list[str]] = []

    def log_message(self, format: str, *args: object) -> None:
        _Quiet.requests.append(self.path)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[labart.SigningKey,
                                                            labart.SigningKey]:
    """The lab signer and another key (not the pinned one)."""
    base = tmp_path_factory.mktemp("keys")
    (base / "a").mkdir()
    (base / "b").mkdir()
    return labart.make_key(base / "a"), labart.make_key(base / "b", "someone else")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A folder served over HTTP on 127.0.0.1, and its base URL."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(_Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Quiet.requests = []
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _coop(tmp_path: Path, key: labart.SigningKey, entry: dict[str, object],
          extra_keys: tuple[labart.SigningKey, ...] = ()) -> Path:
    coop = tmp_path / "coop"
    (coop / "artifacts" / "keys").mkdir(parents=True)
    keyring = key.public.read_bytes() + b"".join(k.public.read_bytes() for k in extra_keys)
    (coop / "artifacts" / "keys" / "lab.asc").write_bytes(keyring)
    (coop / "coop.yml").write_text("name: test\n")
    doc = {"artifacts": {"demo": {"keyring": "keys/lab.asc", "signer": key.fingerprint,
                                  **entry}}}
    (coop / "artifacts" / "catalogue.yml").write_text(json.dumps(doc))
    return coop


def _release(root: Path, signer: labart.SigningKey) -> labart.SignedFile:
    tarball = labart.make_release(root, "demo", "1.0", {"README": b"hello\n",
                                                        "bin/run": b"#!/bin/sh\n"})
    return labart.sign(signer, tarball)


def _run(coop: Path, *args: str) -> tuple[int, str]:
    """`coophost -i COOP artifacts ARGS` in a child process: its real exit status."""
    done = subprocess.run([sys.executable, "-c", "import sys; from coophost.cli.main import "
                           "main; sys.exit(main(sys.argv[1:]))", "-i", str(coop), "artifacts",
                           *args], capture_output=True, text=True, timeout=120, check=False)
    return done.returncode, done.stdout + done.stderr


def _store_files(coop: Path) -> list[str]:
    root = store.store_root(coop)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def test_fetch_verifies_and_stores_then_keeps(tmp_path: Path, served: tuple[Path, str],
                                               keys: tuple[labart.SigningKey, ...]) -> None:
    """A good file is stored with its signature and manifest; a second fetch downloads
    nothing; `list` shows it stored; `verify` passes."""
    www, base = served
    signed = _release(www, keys[0])
    coop = _coop(tmp_path, keys[0], {"version": "1.0", "urls": [f"{base}/demo-1.0.tar.gz"],
                                     "sha256": signed.sha256})
    code, out = _run(coop, "fetch")
    assert code == 0, out
    assert "fetched, verified" in out
    folder = store.store_root(coop) / "demo" / "1.0"
    assert (folder / "demo-1.0.tar.gz").read_bytes() == signed.path.read_bytes()
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["sha256"] == signed.sha256 and manifest["signer"] == keys[0].fingerprint
    asked = len(_Quiet.requests)
    code, out = _run(coop, "fetch")
    assert code == 0 and "stored, verified" in out
    assert len(_Quiet.requests) == asked  # nothing downloaded again
    code, out = _run(coop, "list", "--json")
    assert code == 0 and json.loads(out)[0]["stored"] is True
    code, out = _run(coop, "verify")
    assert code == 0, out
    assert not [p for p in _store_files(coop) if ".incoming-" in p or ".verify-" in p]


@pytest.mark.parametrize("case", ["tampered", "wrong-sha256", "unknown-key", "other-signer"])
def test_fetch_refuses_and_stores_nothing(case: str, tmp_path: Path, served: tuple[Path, str],
                                          keys: tuple[labart.SigningKey, ...]) -> None:
    """Each failed check: exit 1 naming it, and nothing in the store (no partial file)."""
    www, base = served
    signer = keys[1] if case in ("unknown-key", "other-signer") else keys[0]
    signed = _release(www, signer)
    sha = signed.sha256
    if case == "tampered":
        signed.path.write_bytes(signed.path.read_bytes() + b"\0")  # after signing
    if case == "wrong-sha256":
        sha = "0" * 64
    extra = (keys[1],) if case == "other-signer" else ()
    coop = _coop(tmp_path, keys[0], {"version": "1.0", "urls": [f"{base}/demo-1.0.tar.gz"],
                                     "sha256": sha}, extra)
    code, out = _run(coop, "fetch", "--json")
    assert code == 1, out
    [outcome] = json.loads(out[:out.rindex("]") + 1])
    assert outcome["status"] == "refused"
    problems = " | ".join(outcome["problems"])
    expected = {"tampered": "BAD signature", "wrong-sha256": "sha256: the file's is",
                "unknown-key": "not in the keyring", "other-signer": "not the pinned signer"}
    assert expected[case] in problems
    if case == "tampered":
        assert "sha256" in problems  # both checks failed, both are named
    if case in ("wrong-sha256",):
        assert "signature" not in problems  # only what failed is named
    assert _store_files(coop) == []


def test_verify_removes_a_corrupted_copy(tmp_path: Path, served: tuple[Path, str],
                                         keys: tuple[labart.SigningKey, ...]) -> None:
    """A stored file changed afterwards fails `verify` (exit 1) and leaves the store."""
    www, base = served
    signed = _release(www, keys[0])
    coop = _coop(tmp_path, keys[0], {"version": "1.0", "urls": [f"{base}/demo-1.0.tar.gz"],
                                     "sha256": signed.sha256})
    assert _run(coop, "fetch")[0] == 0
    stored = store.store_root(coop) / "demo" / "1.0" / "demo-1.0.tar.gz"
    stored.write_bytes(b"changed on disk")
    code, out = _run(coop, "verify")
    assert code == 1
    assert "removed" in out and "BAD signature" in out
    assert not stored.parent.exists()


def test_second_url_used_when_first_fails(tmp_path: Path, served: tuple[Path, str],
                                          keys: tuple[labart.SigningKey, ...]) -> None:
    """URLs are tried in order: a mirror that does not answer is skipped."""
    www, base = served
    signed = _release(www, keys[0])
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}/demo-1.0.tar.gz"
    coop = _coop(tmp_path, keys[0], {"version": "1.0",
                                     "urls": [dead, f"{base}/demo-1.0.tar.gz"],
                                     "sha256": signed.sha256})
    code, out = _run(coop, "fetch", "--json")
    assert code == 0, out
    assert json.loads(out)[0]["url"] == f"{base}/demo-1.0.tar.gz"


def test_unreachable_exits_4(tmp_path: Path, keys: tuple[labart.SigningKey, ...]) -> None:
    """No URL answers: exit 4, naming each URL; nothing stored."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}/demo-1.0.tar.gz"
    coop = _coop(tmp_path, keys[0], {"version": "1.0", "urls": [dead], "sha256": "a" * 64})
    code, out = _run(coop, "fetch")
    assert code == 4
    assert dead in out
    assert _store_files(coop) == []


def test_size_limit(tmp_path: Path, served: tuple[Path, str],
                    keys: tuple[labart.SigningKey, ...]) -> None:
    """A file larger than max_size_mb is not downloaded to the end, nor stored."""
    www, base = served
    big = www / "big.bin"
    big.write_bytes(b"x" * (2 * 1024 * 1024))
    labart.sign(keys[0], big)
    coop = _coop(tmp_path, keys[0], {"version": "1", "urls": [f"{base}/big.bin"],
                                     "sha256": "b" * 64, "max_size_mb": 1})
    code, out = _run(coop, "fetch")
    assert code == 4
    assert "limit" in out
    assert _store_files(coop) == []


GOOD = {"version": "1.0", "urls": ["https://example.org/d-1.0.tar.gz"], "sha256": "a" * 64,
        "signer": "2880 6A87 8AE4 23A2 8372  792E D758 99B9 A724 937A",
        "keyring": "keys/k.asc"}


@pytest.mark.parametrize(("field", "value", "problem"), [
    ("version", 1.0, "quoted version"),
    ("urls", "https://example.org/x", "list of 1 to 16"),
    ("urls", ["ftp://example.org/x"], "http(s) URL"),
    ("urls", ["https://user:pw@example.org/x"], "credentials"),
    ("sha256", "abc", "64 hex"),
    ("signer", "D75899B9A724937A", "full fingerprint"),
    ("keyring", "../k.asc", "must name a file"),
    ("keyring", "keys/missing.asc", "no such file"),
    ("signature", "asc", "suffix"),
    ("file", "../x", "plain file name"),
    ("max_size_mb", 0, "whole number"),
    ("colour", "red", "unknown field"),
])
def test_catalogue_errors_name_file_field_value(field: str, value: object,
                                                 problem: str) -> None:
    """Each bad field is refused, naming the catalogue file, the field and the value."""
    entry = dict(GOOD, **{field: value})
    with pytest.raises(ValidationError) as err:
        catalogue.parse({"artifacts": {"demo": entry}}, frozenset({"k.asc"}))
    message = str(err.value)
    assert message.startswith("artifacts/catalogue.yml: artifacts.demo.")
    assert field in message and problem in message


def test_catalogue_canonical_forms() -> None:
    """The fingerprint loses its spaces; the file name comes from the first URL."""
    parsed = catalogue.parse({"artifacts": {"demo": GOOD}}, frozenset({"k.asc"}))["demo"]
    assert parsed.signer == "28806A878AE423A28372792ED75899B9A724937A"
    assert parsed.file == "d-1.0.tar.gz"
    assert parsed.signature_urls == ("https://example.org/d-1.0.tar.gz.asc",)


def test_bad_catalogue_exits_2_and_writes_nothing(tmp_path: Path,
                                                  keys: tuple[labart.SigningKey, ...]) -> None:
    """A malformed catalogue: exit 2 naming file, field, value; no store folder made."""
    coop = _coop(tmp_path, keys[0], {"version": "1.0", "urls": ["https://x.test/a"],
                                     "sha256": "nothex"})
    code, out = _run(coop, "fetch")
    assert code == 2
    assert "artifacts/catalogue.yml: artifacts.demo.sha256: 'nothex'" in out
    assert not store.store_root(coop).exists()


def test_gpgv_status_parsing() -> None:
    """VALIDSIG's last field is the primary key's fingerprint (a subkey may have signed)."""
    status = ("[GNUPG:] NEWSIG\n[GNUPG:] GOODSIG D75899B9A724937A Nextcloud\n"
              "[GNUPG:] VALIDSIG AAAA 2024-01-01 1 0 4 0 1 8 00 "
              "28806A878AE423A28372792ED75899B9A724937A\n")
    assert store.parse_gpgv_status(status) == (
        ["28806A878AE423A28372792ED75899B9A724937A"], [], [])
    assert store.parse_gpgv_status("[GNUPG:] BADSIG ABCD x\n")[1] == ["ABCD"]
    assert store.parse_gpgv_status("[GNUPG:] NO_PUBKEY ABCD\n")[2] == ["ABCD"]


def test_mirror_vars_and_hash_follow_the_verified_store(coop: Path, tmp_path: Path,
                                                         keys: tuple[labart.SigningKey, ...]
                                                         ) -> None:
    """Only a host of group artifacts gets the store's verified artifacts (and port 443) in
    its vars; a fetched artifact changes its hash and no other host's; the cache keeps up."""
    from coophost.desired.hostvars import host_files
    from coophost.desired.units import compute

    hosts = coop / "hosts.yml"
    hosts.write_text(hosts.read_text() + "    artifacts: {hosts: {h1: {}}}\n")
    (coop / "artifacts" / "keys").mkdir(parents=True)
    shutil.copy(keys[0].public, coop / "artifacts" / "keys" / "lab.asc")
    release = labart.make_release(tmp_path, "demo", "1.0", {"README": b"x\n"})
    signed = labart.sign(keys[0], release)
    (coop / "artifacts" / "catalogue.yml").write_text(json.dumps({"artifacts": {"demo": {
        "version": "1.0", "urls": ["https://example.org/demo-1.0.tar.gz"],
        "sha256": signed.sha256, "signer": keys[0].fingerprint, "keyring": "keys/lab.asc"}}}))
    before = compute(coop)
    assert before.mirror == []
    texts, _ = host_files(coop)
    assert "coophost_artifacts: []" in texts["h1"] and "coophost_artifacts: []" in texts["h2"]
    assert "- 443" in texts["h1"].split("coophost_host_ports:")[1].split("\n#")[0]

    folder = store.stored_folder(coop, catalogue.load(coop)["demo"])
    folder.mkdir(parents=True)
    shutil.copy(release, folder / release.name)
    (folder / "manifest.json").write_text(json.dumps({"sha256": signed.sha256}))
    after = compute(coop)  # the cached placement must not hide the new store content
    assert after.mirror == [{"name": "demo", "version": "1.0", "file": "demo-1.0.tar.gz",
                             "sha256": signed.sha256, "path": "demo/1.0/demo-1.0.tar.gz"}]
    assert after.host_hashes["h1"] != before.host_hashes["h1"]
    assert after.host_hashes["h2"] == before.host_hashes["h2"]
    texts, _ = host_files(coop)
    assert 'path: !unsafe "demo/1.0/demo-1.0.tar.gz"' in texts["h1"]
    assert "coophost_artifacts: []" in texts["h2"]


def test_prune_removes_only_what_the_catalogue_no_longer_names(
        tmp_path: Path, served: tuple[Path, str], keys: tuple[labart.SigningKey, ...]) -> None:
    """After the catalogue moves to 1.1, `prune` removes 1.0 and an unlisted artifact, keeps
    1.1 (`--dry-run` first lists the same and removes nothing)."""
    www, base = served
    old = _release(www, keys[0])
    coop = _coop(tmp_path, keys[0], {"version": "1.0", "urls": [f"{base}/demo-1.0.tar.gz"],
                                     "sha256": old.sha256})
    assert _run(coop, "fetch")[0] == 0
    new = labart.sign(keys[0], labart.make_release(www, "demo", "1.1", {"README": b"new\n"}))
    doc = json.loads((coop / "artifacts" / "catalogue.yml").read_text())
    doc["artifacts"]["demo"].update(version="1.1", urls=[f"{base}/demo-1.1.tar.gz"],
                                    sha256=new.sha256)
    (coop / "artifacts" / "catalogue.yml").write_text(json.dumps(doc))
    assert _run(coop, "fetch")[0] == 0
    (store.store_root(coop) / "gone" / "2.0").mkdir(parents=True)
    code, out = _run(coop, "prune", "--dry-run", "--json")
    assert code == 0 and sorted(json.loads(out)["would_remove"]) == ["demo/1.0", "gone"]
    assert (store.store_root(coop) / "demo" / "1.0").is_dir()
    code, out = _run(coop, "prune", "--json")
    assert code == 0 and sorted(json.loads(out)["removed"]) == ["demo/1.0", "gone"]
    assert _store_files(coop) == ["demo", "demo/1.1", "demo/1.1/demo-1.1.tar.gz",
                                  "demo/1.1/demo-1.1.tar.gz.asc", "demo/1.1/manifest.json"]


def test_lab_release_is_byte_for_byte_stable(tmp_path: Path) -> None:
    """The same files make the same tarball (no gzip or tar timestamps): a stable SHA-256."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = labart.make_release(tmp_path / "a", "x", "1", labart.LAB_FILES)
    second = labart.make_release(tmp_path / "b", "x", "1", labart.LAB_FILES)
    assert first.read_bytes() == second.read_bytes()


def test_lab_release_made_fetched_and_forgotten(tmp_path: Path) -> None:
    """`lab artifact`'s work: the lab release stored, verified; a second run keeps it (same
    SHA-256, same key); `lab down`'s undo removes entry, key and copy, keeping other entries."""
    coop = tmp_path / "coop"
    coop.mkdir()
    (coop / "coop.yml").write_text("name: test\n")
    first = labart.lab_release(coop, "PEM\n")
    assert first.status == "fetched", first.problems
    again = labart.lab_release(coop, "PEM\n")
    assert again.status == "stored" and again.sha256 == first.sha256
    assert again.signer == first.signer
    assert (coop / ".coophost" / "lab" / "acme-roots.pem").read_text() == "PEM\n"
    labart.forget_lab_release(coop)
    assert not (coop / "artifacts").exists()
    assert not (store.store_root(coop) / labart.LAB_RELEASE).exists()

    labart.lab_release(coop, "PEM\n")
    path = coop / "artifacts" / "catalogue.yml"
    (coop / "artifacts" / "keys" / "other.asc").write_text("key")
    path.write_text(path.read_text() + "  other:\n    version: '1'\n")
    labart.forget_lab_release(coop)
    assert "other:" in path.read_text() and labart.LAB_RELEASE not in path.read_text()
    assert (coop / "artifacts" / "keys" / "other.asc").is_file()


def test_fetch_sweeps_what_a_killed_fetch_left(tmp_path: Path, served: tuple[Path, str],
                                               keys: tuple[labart.SigningKey, ...]) -> None:
    """Work folders of a fetch killed midway (an unchecked download, a half-moved copy) are
    removed by the next fetch, which holds the lock."""
    www, base = served
    signed = _release(www, keys[0])
    coop = _coop(tmp_path, keys[0], {"version": "1.0", "urls": [f"{base}/demo-1.0.tar.gz"],
                                     "sha256": signed.sha256})
    root = store.store_root(coop)
    (root / ".incoming-dead").mkdir(parents=True)
    (root / ".incoming-dead" / "demo-1.0.tar.gz").write_bytes(b"unchecked")
    (root / "demo" / ".old-1.0-123").mkdir(parents=True)
    code, out = _run(coop, "fetch")
    assert code == 0, out
    assert not (root / ".incoming-dead").exists() and not (root / "demo" / ".old-1.0-123").exists()
    assert (root / "demo" / "1.0" / "demo-1.0.tar.gz").is_file()
