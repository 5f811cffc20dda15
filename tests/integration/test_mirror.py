"""The artifact path on lab hosts: a lab-made release, signed with a lab key, fetched and verified
on the controller, served by the mirror (h1, group artifacts) over HTTPS, and checked again by
another host that fetches it; tampering at each step is refused and nothing bad is served.

No upstream release server is reachable here, so the release is the lab's own (the real
Nextcloud archive path is the same code with the catalogue's real entry; see the README).
The test leaves the co-op as it found it: no catalogue, an empty store, the mirror serving
nothing.
"""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from coophost.lab import artifacts as labart
from coophost.lab.gitprobe import https_get
from coophost.lab.lab import Lab
from coophost.lab.mailcheck import acme_roots, lab_state
from tests.integration.conftest import LabInfo

pytestmark = pytest.mark.lab

MIRROR = "h1"  # the lab's group artifacts (coophost.lab.lab)
CONSUMER = "h2"
PROBE_DIR = "/var/lib/coophost/artifacts-probe"


@dataclass
class Mirror:
    """The lab, a local HTTP 'upstream', the lab signer, and the served release."""

    info: LabInfo
    www: Path
    base: str
    key: labart.SigningKey
    cafile: Path
    address: str  # the mirror's lab IP
    fqdn: str

    def catalogue(self, version: str, sha256: str) -> None:
        folder = self.info.inventory / "artifacts"
        (folder / "keys").mkdir(parents=True, exist_ok=True)
        shutil.copy(self.key.public, folder / "keys" / "lab.asc")
        (folder / "catalogue.yml").write_text(json.dumps({"artifacts": {"demo": {
            "version": version, "urls": [f"{self.base}/demo-{version}.tar.gz"],
            "sha256": sha256, "signer": self.key.fingerprint, "keyring": "keys/lab.asc"}}}))

    def cli_json(self, *args: str) -> tuple[int, Any]:
        proc = self.info.cli(*args, "--json")
        text = proc.stdout.strip()
        return proc.returncode, json.loads(text) if text else proc.stderr

    def deploy(self) -> dict[str, Any]:
        code, report = self.cli_json("deploy")
        assert code == 0, report
        return dict(report["hosts"])

    def get(self, path: str) -> tuple[int, bytes]:
        status, _, body = https_get(self.address, self.fqdn, path, self.cafile)
        return status, body


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture(scope="module")
def mirror(lab: LabInfo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mirror]:
    """A deployed lab with an upstream on 127.0.0.1; the co-op put back as it was at the end."""
    report = lab.cli("deploy", "--json")
    assert report.returncode == 0, report.stdout + report.stderr
    base_dir = tmp_path_factory.mktemp("mirror")
    www = base_dir / "www"
    www.mkdir()
    (base_dir / "key").mkdir()
    key = labart.make_key(base_dir / "key")
    state = lab_state(Lab(lab.name, lab.inventory))
    cafile = base_dir / "ca.pem"
    cafile.write_text(acme_roots(Lab(lab.name, lab.inventory), state))
    host = next(h for h in state.hosts if h.name == MIRROR)
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Quiet, directory=str(www)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield Mirror(lab, www, f"http://127.0.0.1:{server.server_address[1]}", key, cafile,
                     host.ip, host.fqdn)
    finally:
        server.shutdown()
        server.server_close()
        shutil.rmtree(lab.inventory / "artifacts", ignore_errors=True)
        shutil.rmtree(lab.inventory / ".coophost" / "artifacts", ignore_errors=True)
        after = lab.cli("deploy", "--json")  # nothing left to serve: the mirror empties
        assert after.returncode == 0, after.stdout + after.stderr


def in_host(lab: LabInfo, name: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", "exec", Lab(lab.name, lab.inventory).container(name),
                           *argv], capture_output=True, text=True, check=False, timeout=60)


def test_mirror_serves_verified_release_and_hosts_check_it(mirror: Mirror) -> None:
    """Fetched and verified on the controller, served by h1, fetched and checked by h2; a
    tampered served file is refused by h2 (nothing kept), and the next deploy heals h1."""
    signed = labart.sign(mirror.key, labart.make_release(
        mirror.www, "demo", "1.0", {"README": b"lab release\n", "bin/run": b"#!/bin/sh\n"}))
    mirror.catalogue("1.0", signed.sha256)
    code, fetched = mirror.cli_json("artifacts", "fetch")
    assert code == 0 and fetched[0]["status"] == "fetched", fetched

    hosts = mirror.deploy()
    assert hosts[MIRROR]["status"] == "ok", hosts
    status, body = mirror.get("/artifacts/demo/1.0/demo-1.0.tar.gz")
    assert status == 200 and body == signed.path.read_bytes()

    code, probe = mirror.cli_json("artifacts", "probe", CONSUMER, "demo",
                                  "--ca-file", str(mirror.cafile))
    assert code == 0 and probe["ok"] and probe["sha256"] == signed.sha256, probe
    assert in_host(mirror.info, CONSUMER, "test", "-e", PROBE_DIR).returncode == 1

    served = "/srv/coophost/artifacts/demo/1.0/demo-1.0.tar.gz"
    assert in_host(mirror.info, MIRROR, "sh", "-c", f"printf x >> {served}").returncode == 0
    code, probe = mirror.cli_json("artifacts", "probe", CONSUMER, "demo",
                                  "--ca-file", str(mirror.cafile))
    assert code == 1 and not probe["ok"], probe
    assert "checksum" in " ".join(probe["problems"]).lower(), probe
    assert in_host(mirror.info, CONSUMER, "test", "-e", PROBE_DIR).returncode == 1

    heal = mirror.info.cli("deploy", "--all", "--host", MIRROR, "--json")
    assert heal.returncode == 0, heal.stdout + heal.stderr
    status, body = mirror.get("/artifacts/demo/1.0/demo-1.0.tar.gz")
    assert status == 200 and body == signed.path.read_bytes()


def test_refused_release_is_never_served(mirror: Mirror) -> None:
    """A release changed after signing: `fetch` refuses it (exit 1), the store keeps nothing
    of it, the mirror withdraws what the catalogue no longer names, and h2 gets nothing."""
    signed = labart.sign(mirror.key, labart.make_release(
        mirror.www, "demo", "1.1", {"README": b"next lab release\n"}))
    sha = signed.sha256
    signed.path.write_bytes(signed.path.read_bytes() + b"tampered after signing")
    mirror.catalogue("1.1", sha)
    code, fetched = mirror.cli_json("artifacts", "fetch")
    assert code == 1 and fetched[0]["status"] == "refused", fetched
    assert "BAD signature" in " ".join(fetched[0]["problems"])
    stored = mirror.info.inventory / ".coophost" / "artifacts" / "demo"
    assert not (stored / "1.1").exists()

    hosts = mirror.deploy()
    assert hosts[MIRROR]["status"] == "ok", hosts
    for version in ("1.0", "1.1"):
        status, _ = mirror.get(f"/artifacts/demo/{version}/demo-{version}.tar.gz")
        assert status == 404, version
    code, probe = mirror.cli_json("artifacts", "probe", CONSUMER, "demo",
                                  "--ca-file", str(mirror.cafile))
    assert code == 1 and not probe["ok"], probe
