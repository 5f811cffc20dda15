"""A thin, typed wrapper over the `docker` CLI: argument lists only, never a shell."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Sequence
from typing import Any

from coophost.errors import EnvironmentProblem, ExternalCommandError

DOCKER_FIX = (
    "install and start Docker's engine: `apt-get install -y docker.io && dockerd &` "
    "(or `systemctl start docker`); `make demo` does both"
)


def docker(*args: str, check: bool = True, input_bytes: bytes | None = None,
           timeout: float | None = 600) -> subprocess.CompletedProcess[bytes]:
    """Run `docker ARGS...` and return the completed process; raise on failure when `check`."""
    exe = shutil.which("docker")
    if exe is None:
        raise EnvironmentProblem("no `docker` command on this machine", hint=DOCKER_FIX)
    proc = subprocess.run([exe, *args], input=input_bytes, capture_output=True,
                          timeout=timeout, check=False)
    if check and proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()
        raise ExternalCommandError(f"docker {args[0]} failed: {err}")
    return proc


def out(*args: str) -> str:
    """Run a docker command and return its stripped standard output."""
    return docker(*args).stdout.decode().strip()


def require_engine() -> None:
    """Raise a clear EnvironmentProblem (exit 2) when no Docker engine answers."""
    if shutil.which("docker") is None:
        raise EnvironmentProblem("no `docker` command on this machine", hint=DOCKER_FIX)
    proc = docker("version", "--format", "{{.Server.Version}}", check=False, timeout=20)
    if proc.returncode != 0:
        raise EnvironmentProblem("no Docker engine answers on this machine", hint=DOCKER_FIX)


def image_exists(ref: str) -> bool:
    """Whether a local image `ref` exists."""
    return docker("image", "inspect", ref, check=False).returncode == 0


def inspect(kind: str, names: Sequence[str]) -> list[dict[str, Any]]:
    """`docker KIND inspect` the given objects; objects that do not exist are left out."""
    if not names:
        return []
    proc = docker(kind, "inspect", *names, check=False)
    if not proc.stdout.strip():
        return []
    data: list[dict[str, Any]] = json.loads(proc.stdout)
    return data


def ids_by_label(kind: str, label: str) -> list[str]:
    """Ids (or names, for networks and volumes) of the objects of `kind` carrying `label`."""
    if kind == "container":
        text = out("ps", "-a", "-q", "--filter", f"label={label}")
    else:
        text = out(kind, "ls", "-q", "--filter", f"label={label}")
    return [line for line in text.splitlines() if line]
