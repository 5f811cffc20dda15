"""The lab's base image: Debian bookworm from debootstrap, imported into Docker, cached by recipe.

Docker Hub is not reachable on the machines coophost is developed on, so the lab builds its own
image from the Debian mirror that this machine's apt sources name. The image is tagged with a
hash of its recipe: the same recipe is built once, a changed recipe gives a new tag.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from coophost.errors import EnvironmentProblem, ExternalCommandError
from coophost.lab import docker

IMAGE_REPO = "coophost-lab"
MIRROR_ENV = "COOPHOST_DEBIAN_MIRROR"
LAB_USER = "coophost"

# Everything in this recipe is hashed into the image tag: change it and the image is rebuilt.
BASE_PACKAGES = (
    "ca-certificates", "dbus", "iproute2", "openssh-server", "procps", "python3",
    "python3-apt", "sudo", "systemd", "systemd-sysv",
)
# Units that cannot work, or make no sense, in a container host.
MASKED_UNITS = (
    "getty@tty1.service", "console-getty.service", "systemd-remount-fs.service",
    "systemd-firstboot.service", "sys-kernel-config.mount", "sys-kernel-debug.mount",
)
# Services for the lab's own DNS and ACME CA, installed on a second image built from the base.
SERVICE_PACKAGES = ("dnsmasq-base", "pebble")
RECIPE_VERSION = 3


@dataclass(frozen=True)
class Recipe:
    """What the base image is made of; its hash is the image tag."""

    suite: str = "bookworm"
    variant: str = "minbase"
    packages: tuple[str, ...] = BASE_PACKAGES
    masked: tuple[str, ...] = MASKED_UNITS
    user: str = LAB_USER
    version: int = RECIPE_VERSION
    service_packages: tuple[str, ...] = field(default=SERVICE_PACKAGES)

    def digest(self) -> str:
        """A short stable hash of the recipe."""
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    @property
    def base_tag(self) -> str:
        """The tag of the systemd host image."""
        return f"{IMAGE_REPO}:base-{self.digest()}"

    @property
    def services_tag(self) -> str:
        """The tag of the image that runs the lab DNS and ACME CA."""
        return f"{IMAGE_REPO}:services-{self.digest()}"


def _sources_lines(text: str) -> Iterable[tuple[str, list[str], list[str]]]:
    """Yield (uri, suites, components) from one-line `deb` entries."""
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue
        words = re.sub(r"\[[^]]*\]", " ", line).split()
        if len(words) >= 3:
            yield words[1], [words[2]], words[3:]


def _sources_deb822(text: str) -> Iterable[tuple[str, list[str], list[str]]]:
    """Yield (uri, suites, components) from deb822 `.sources` stanzas."""
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for raw in stanza.splitlines():
            if raw.startswith("#") or ":" not in raw:
                continue
            key, _, value = raw.partition(":")
            fields[key.strip().lower()] = value.strip()
        if "deb" not in fields.get("types", "").split():
            continue
        if fields.get("enabled", "yes").lower() == "no":
            continue
        for uri in fields.get("uris", "").split():
            yield uri, fields.get("suites", "").split(), fields.get("components", "").split()


def mirror_from_apt_sources(root: Path = Path("/etc/apt")) -> str | None:
    """The Debian archive URI this machine's apt sources name for the main archive, if any."""
    entries: list[tuple[str, list[str], list[str]]] = []
    main = root / "sources.list"
    if main.is_file():
        entries += _sources_lines(main.read_text(errors="replace"))
    parts = root / "sources.list.d"
    if parts.is_dir():
        for path in sorted(parts.iterdir()):
            if path.suffix == ".list":
                entries += _sources_lines(path.read_text(errors="replace"))
            elif path.suffix == ".sources":
                entries += _sources_deb822(path.read_text(errors="replace"))
    for uri, suites, components in entries:
        base_suites = {s for s in suites if not s.endswith(("-security", "-updates"))}
        if uri.startswith(("http://", "https://")) and base_suites and "main" in components \
                and "security" not in uri:
            return uri.rstrip("/")
    return None


def resolve_mirror(explicit: str | None) -> str:
    """The mirror to debootstrap from: `--mirror`, then $COOPHOST_DEBIAN_MIRROR, then apt's."""
    mirror = explicit or os.environ.get(MIRROR_ENV) or mirror_from_apt_sources()
    if not mirror:
        raise EnvironmentProblem(
            "cannot tell which Debian mirror to build the lab image from",
            hint=f"pass --mirror URL or set {MIRROR_ENV}",
        )
    return mirror


def _run(argv: list[str], what: str) -> None:
    proc = subprocess.run(argv, capture_output=True, check=False)
    if proc.returncode != 0:
        tail = proc.stderr.decode(errors="replace").strip().splitlines()[-5:]
        raise ExternalCommandError(f"{what} failed: " + " | ".join(tail))


def _customise(root: Path, recipe: Recipe) -> None:
    """Make a debootstrapped tree fit to boot as a lab host."""
    # No host keys in the image: every lab host gets its own, made by `lab up` and pinned.
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    _run(["chroot", str(root), "useradd", "--create-home", "--uid", "1000", "--shell", "/bin/bash",
          recipe.user], "useradd in the image")
    sudoers = root / "etc/sudoers.d" / recipe.user
    sudoers.write_text(f"{recipe.user} ALL=(ALL) NOPASSWD:ALL\n")
    sudoers.chmod(0o440)
    for unit in recipe.masked:
        link = root / "etc/systemd/system" / unit
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")
    (root / "etc/machine-id").write_text("")
    for lists in (root / "var/lib/apt/lists").glob("*_*"):
        lists.unlink()
    # apt's cache_valid_time looks at this folder's mtime: make the empty lists look stale.
    os.utime(root / "var/lib/apt/lists", (0, 0))
    # No package lists and no binary caches: apt's first `update` on a host is a real one.
    for cache in (root / "var/cache/apt").glob("*.bin"):
        cache.unlink()
    shutil.rmtree(root / "var/cache/apt/archives", ignore_errors=True)
    (root / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)
    (root / "etc/coophost-lab-image").write_text(recipe.digest() + "\n")


def build_base(recipe: Recipe, mirror: str, workdir: Path | None = None) -> str:
    """Debootstrap, customise and import the base image; return its tag."""
    for tool in ("debootstrap", "tar", "chroot"):
        if shutil.which(tool) is None:
            raise EnvironmentProblem(f"`{tool}` is missing", hint="apt-get install -y debootstrap")
    with tempfile.TemporaryDirectory(prefix="coophost-image-", dir=workdir) as tmp:
        root = Path(tmp) / "root"
        _run(["debootstrap", f"--variant={recipe.variant}",
              "--include=" + ",".join(recipe.packages), recipe.suite, str(root), mirror],
             "debootstrap")
        _customise(root, recipe)
        tar = subprocess.Popen(["tar", "-C", str(root), "--numeric-owner", "-c", "."],
                               stdout=subprocess.PIPE)
        imp = subprocess.run(
            ["docker", "import", "--change", 'CMD ["/lib/systemd/systemd"]',
             "--change", f"LABEL coophost.recipe={recipe.digest()}", "-", recipe.base_tag],
            stdin=tar.stdout, capture_output=True, check=False)
        if tar.stdout is not None:
            tar.stdout.close()
        if tar.wait() != 0 or imp.returncode != 0:
            raise ExternalCommandError("docker import failed: " + imp.stderr.decode().strip())
    return recipe.base_tag


def build_services(recipe: Recipe) -> str:
    """Build the lab services image (DNS + ACME CA) on top of the base image; return its tag."""
    name = f"coophost-image-build-{recipe.digest()}"
    docker.docker("rm", "-f", name, check=False)
    script = ("apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "
              "--no-install-recommends " + " ".join(recipe.service_packages)
              + " && apt-get clean && rm -rf /var/lib/apt/lists/*")
    try:
        proc = docker.docker("run", "--name", name, recipe.base_tag, "/bin/sh", "-c", script,
                             check=False)
        if proc.returncode != 0:
            raise ExternalCommandError("installing the lab services failed: "
                                       + proc.stderr.decode(errors="replace")[-400:])
        docker.docker("commit", "--change", 'CMD ["/bin/sh"]', name, recipe.services_tag)
    finally:
        docker.docker("rm", "-f", name, check=False)
    return recipe.services_tag


def ensure_images(recipe: Recipe, mirror: str | None = None) -> tuple[str, str, bool]:
    """Build whatever image is missing; return (base tag, services tag, whether we built).

    One build at a time on this machine: a lab and the molecule scenarios started together
    would otherwise both build, under the same builder container names. The second waits on
    the lock and then finds the images there.
    """
    built = False
    with build_lock():
        if not docker.image_exists(recipe.base_tag):
            build_base(recipe, resolve_mirror(mirror))
            built = True
        if not docker.image_exists(recipe.services_tag):
            build_services(recipe)
            built = True
    return recipe.base_tag, recipe.services_tag, built


@contextlib.contextmanager
def build_lock() -> Iterator[None]:
    """Hold this machine's lab image lock (a flock in the temp folder) for the block."""
    path = Path(tempfile.gettempdir()) / "coophost-lab-image.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
