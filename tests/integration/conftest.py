"""One lab shared by every integration test: brought up once, torn down at the end."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.secretscan import (
    RECORDER,
    decrypt_all,
    files_under,
    leaks,
    shows_new_password,
)

COOPHOST = [sys.executable, "-m", "coophost"]
# Every ansible-runner folder of the session is kept here before coophost removes it, and
# searched for secrets at the end (see `no_secret_leaks`).
RUNNER_COPIES = Path(tempfile.mkdtemp(prefix="coophost-it-runners-"))
os.environ["COOPHOST_KEEP_RUNNER_DIR"] = str(RUNNER_COPIES)


def record(args: tuple[str, ...] | list[str], *texts: str) -> None:
    """Keep what a coophost run printed for the final secret search (not `secrets show`).

    `texts` are (stdout, stderr, ...). The commands that show a new password once, on
    purpose (`secrets rotate`, the member verb `password`), have their stdout left out; what
    else they print is searched.
    """
    words = list(args)
    if any(words[i:i + 2] == ["secrets", "show"] for i in range(len(words))):
        return  # the one command that prints secrets, on purpose
    if shows_new_password(words):
        texts = texts[1:]
    RECORDER.add("coophost " + " ".join(words)[:120], *texts)



def coophost(*args: str, check: bool = False, env: dict[str, str] | None = None,
             timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in a subprocess."""
    proc = subprocess.run([*COOPHOST, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, check=False)
    record(args, proc.stdout, proc.stderr)
    if check and proc.returncode != 0:
        raise AssertionError(f"coophost {' '.join(args)} exited {proc.returncode}:\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


def docker_objects(label: str) -> dict[str, list[str]]:
    """Containers, networks and volumes carrying `label`."""
    def ls(*argv: str) -> list[str]:
        out = subprocess.run(["docker", *argv, "--filter", f"label={label}"],
                             capture_output=True, text=True, check=True).stdout
        return [line for line in out.split() if line]
    return {"containers": ls("ps", "-a", "-q"), "networks": ls("network", "ls", "-q"),
            "volumes": ls("volume", "ls", "-q")}


@dataclass
class LabInfo:
    """The shared lab: its name and inventory folder."""

    name: str
    inventory: Path

    def cli(self, *args: str, **kw: object) -> subprocess.CompletedProcess[str]:
        """Run coophost against this lab's inventory."""
        return coophost("-i", str(self.inventory), *args, **kw)  # type: ignore[arg-type]

    def status_state(self) -> dict[str, object]:
        """The lab's saved record (`lab up` writes it beside the inventory)."""
        data: dict[str, object] = json.loads(
            (self.inventory / ".coophost" / "lab" / "lab.json").read_text())
        return data

    def status(self) -> dict[str, object]:
        """`lab status --json` of this lab."""
        out = self.cli("lab", "status", "--name", self.name, "--json", check=True).stdout
        data: dict[str, object] = json.loads(out)
        return data


def _engine_answers() -> bool:
    try:
        return subprocess.run(["docker", "version"], capture_output=True,
                              timeout=20, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


SAMPLE_COOP = Path(__file__).resolve().parents[2] / "inventories" / "lab"
HOSTS = 3


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabInfo]:
    """A three-host lab for the whole session, registered as the sample co-op's hosts."""
    if not _engine_answers():
        pytest.fail("no Docker engine answers: run `scripts/docker-engine start` (make test does)")
    reuse = os.environ.get("COOPHOST_IT_LAB", "")
    if reuse:  # a developer's running lab, as NAME=INVENTORY: used as is, never brought down
        lab_name, _, inventory = reuse.partition("=")
        yield LabInfo(lab_name, Path(inventory).resolve())
        return
    name = f"it{os.getpid() % 100000}"
    info = LabInfo(name, tmp_path_factory.mktemp("coop") / name)
    info.inventory.mkdir()
    # The sample co-op's ACME CA is the `lab` lab's: point it at this lab's own.
    coop = (SAMPLE_COOP / "coop.yml").read_text()
    (info.inventory / "coop.yml").write_text(coop.replace("acme.lab.test", f"acme.{name}.test"))
    shutil.copytree(SAMPLE_COOP / "members", info.inventory / "members")
    info.cli("lab", "up", "--name", name, "--hosts", str(HOSTS), check=True)
    yield info
    info.cli("lab", "down", "--name", name)


@pytest.fixture(scope="session", autouse=True)
def no_secret_leaks(lab: LabInfo) -> Iterator[None]:
    """At the end of the session: no secret, nor a piece of one, in anything the suite saw.

    Searched: every coophost output (deploys, failures, mail and member tests), every
    ansible-runner folder as it was before removal, state.db and the caches, rendered host
    vars, requests and the audit log.
    """
    yield
    password_file = lab.inventory / "vault-password"
    password = os.environ.get("COOPHOST_VAULT_PASSWORD", "").encode() or \
        password_file.read_bytes().strip()
    secrets = decrypt_all(lab.inventory, password)
    assert secrets, f"no vault-encrypted secret found under {lab.inventory}: nothing to search for"
    secrets.append(password.decode())
    places = [*RECORDER.outputs, *files_under(lab.inventory, RUNNER_COPIES,
                                              skip=[password_file])]
    found = leaks(secrets, places)
    shutil.rmtree(RUNNER_COPIES, ignore_errors=True)
    assert not found, "secrets leaked:\n" + "\n".join(found[:20])
