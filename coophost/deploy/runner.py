"""Run one of coophost's playbooks through ansible-runner, each run in its own private folder.

The deploy engine builds on this; nothing here prints. Runner artifacts (which hold task
events) are removed after the run unless asked to keep them, and no task that handles a secret
may log it (`no_log`), so nothing secret ever lands there either.
"""

from __future__ import annotations

import configparser
import contextlib
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coophost.fsutil import ALIVE_FILE, atomic_write, private_folder
from coophost.layout import KNOWN_HOSTS_FILE, STATE_DIR, content_root, roles_paths

KEEP_RUNNER_DIR_ENV = "COOPHOST_KEEP_RUNNER_DIR"
RUN_FOLDER_PREFIX = "coophost-run-"
SSH_CONFIG_FILE = "ssh_config"  # in the inventory's state folder: jump routes for Ansible
CONTROL_DIR = "cp"  # a run's own SSH master sockets


@dataclass
class PlaybookResult:
    """How a playbook run ended, with Ansible's per-host counters."""

    status: str
    rc: int
    stats: dict[str, dict[str, int]] = field(default_factory=dict)
    stdout: str = ""

    @property
    def ok(self) -> bool:
        """Whether the run succeeded on every host."""
        return self.status == "successful" and self.rc == 0

    def hosts_with(self, counter: str) -> list[str]:
        """Hosts whose `counter` (ok, changed, failures, dark, skipped...) is non-zero."""
        return sorted(h for h, n in self.stats.get(counter, {}).items() if n)


def pinned_ssh_args(inventory: Path) -> str:
    """The ssh options that trust only the co-op's known_hosts, after ansible.cfg's own ssh_args.

    ssh keeps the first value it is given for an option, and both Ansible's ssh plugin and
    mitogen put `ssh_args` before the inventory's `ansible_ssh_common_args`/`_extra_args`: a
    hosts.yml that says `StrictHostKeyChecking=no`, or names another known_hosts, loses.
    """
    config = configparser.ConfigParser(interpolation=None)
    config.read(content_root() / "ansible.cfg")
    shipped = config.get("ssh_connection", "ssh_args", fallback="")
    known = shlex.quote(str((inventory / KNOWN_HOSTS_FILE).resolve()))
    jumps = jump_config_path(inventory)
    use = f"-F {shlex.quote(str(jumps))} " if jumps.is_file() else ""
    return (f"{use}{shipped} -o StrictHostKeyChecking=yes -o UserKnownHostsFile={known} "
            "-o GlobalKnownHostsFile=/dev/null -o UpdateHostKeys=no").strip()


def jump_config_path(inventory: Path) -> Path:
    """Where `write_jump_config` keeps the ssh config of hosts reached through jump hosts."""
    return (inventory / STATE_DIR / SSH_CONFIG_FILE).resolve()


def write_jump_config(inventory: Path) -> Path | None:
    """Give Ansible's ssh the ProxyJump routes of ~/.ssh/config, every hop pinned.

    Written when some host of hosts.yml is reached through a jump host (coophost.sshroute
    explains why OpenSSH's own ProxyJump will not do), removed otherwise; `pinned_ssh_args`
    then adds `-F` for it. The sysadmin's config and the system's are included after it.
    """
    from coophost.registry.hosts import load_hosts
    from coophost.sshroute import config_path, host_route, load_config, openssh_config

    user_config = config_path()
    config = load_config(user_config)
    routes = {h.address: host_route(h, config) for h in load_hosts(inventory)}
    target = jump_config_path(inventory)
    if not any(r.jumps for r in routes.values()):
        target.unlink(missing_ok=True)
        return None
    system = Path("/etc/ssh/ssh_config")
    includes = tuple(p for p in (user_config, system) if p is not None and p.is_file())
    text = openssh_config(routes, (inventory / KNOWN_HOSTS_FILE).resolve(), target, includes)
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(target, text, 0o600)
    return target


def ansible_env(inventory: Path) -> dict[str, str]:
    """Environment for ansible: shipped ansible.cfg, roles, fact cache, pinned host keys.

    ansible-runner sets ANSIBLE_HOST_KEY_CHECKING=False when the environment lacks it, and
    mitogen then adds `StrictHostKeyChecking no` and `UserKnownHostsFile /dev/null` ahead of
    every other option: it must be set here, explicitly.
    """
    root = content_root()
    # ansible-playbook comes with coophost's Python; find it even when that venv is not on PATH.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return {
        "PATH": path,
        "ANSIBLE_CONFIG": str(root / "ansible.cfg"),
        "ANSIBLE_ROLES_PATH": os.pathsep.join(str(path) for path in roles_paths()),
        "ANSIBLE_CACHE_PLUGIN_CONNECTION": str(inventory.resolve() / ".coophost" / "facts"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_SSH_ARGS": pinned_ssh_args(inventory),
    }


def pinned_extravars(inventory: Path) -> dict[str, Any]:
    """The same host key settings as extra vars, which no inventory variable can override."""
    return {"ansible_host_key_checking": True, "ansible_ssh_host_key_checking": True,
            "ansible_ssh_args": pinned_ssh_args(inventory)}


def _keep_for_inspection(private: Path) -> None:
    """Copy a finished job's whole runner folder into $COOPHOST_KEEP_RUNNER_DIR, when set.

    For a sysadmin (or the test suite) to inspect what ansible-runner wrote; nothing in it is
    secret, and the integration tests search these copies for every secret of the co-op.
    """
    keep = os.environ.get(KEEP_RUNNER_DIR_ENV, "")
    if keep and private.is_dir():
        shutil.copytree(private, Path(keep) / private.name, symlinks=True, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns(CONTROL_DIR, ALIVE_FILE))


def run_playbook(
    playbook: Path,
    inventory: Path,
    *,
    limit: list[str] | None = None,
    extravars: dict[str, Any] | None = None,
    envvars: dict[str, str] | None = None,
    forks: int | None = None,
    check: bool = False,
    event_handler: Callable[[dict[str, Any]], bool] | None = None,
    cancel_callback: Callable[[], bool] | None = None,
    keep_artifacts: Path | None = None,
) -> PlaybookResult:
    """Run `playbook` against `inventory/hosts.yml` and return its outcome."""
    import ansible_runner  # imported here: it is slow to import and most commands never run it

    cmdline = "--check --diff" if check else None
    write_jump_config(inventory)
    with private_folder(RUN_FOLDER_PREFIX) as private:
        # Multiplexed SSH masters of this run only: a master kept from an earlier run would
        # carry a connection whose host key was checked then, not now.
        control = private / CONTROL_DIR
        control.mkdir(mode=0o700)
        try:
            runner = ansible_runner.run(
                private_data_dir=str(private),
                playbook=str(playbook.resolve()),
                inventory=str((inventory / "hosts.yml").resolve()),
                limit=",".join(limit) if limit else None,
                extravars={**(extravars or {}), **pinned_extravars(inventory)},
                envvars={**ansible_env(inventory), "ANSIBLE_SSH_CONTROL_PATH_DIR": str(control),
                         **(envvars or {})},
                forks=forks,
                cmdline=cmdline,
                quiet=True,
                event_handler=event_handler,
                cancel_callback=cancel_callback,
                # A cancel is noticed at the next wake-up of runner's loop: every 0.5 s,
                # not the default 5 s in which a short job would run to its end.
                settings={"suppress_ansible_output": True, "pexpect_timeout": 0.5},
            )
            stats = runner.stats or {}
            stdout_file = private / "artifacts" / str(runner.config.ident) / "stdout"
            result = PlaybookResult(
                status=str(runner.status), rc=int(runner.rc or 0),
                stats={k: v for k, v in stats.items() if isinstance(v, dict)},
                stdout=stdout_file.read_text(errors="replace") if stdout_file.is_file() else "")
        finally:
            _close_masters(control)
            if keep_artifacts is not None:
                shutil.copytree(private / "artifacts", keep_artifacts, dirs_exist_ok=True)
            _keep_for_inspection(private)
    return result


def _close_masters(control: Path) -> None:
    """Ask this run's SSH masters to exit now rather than linger for ControlPersist."""
    for socket in control.iterdir() if control.is_dir() else ():
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            subprocess.run(["ssh", "-o", f"ControlPath={socket}", "-O", "exit", "coophost-run"],
                           capture_output=True, timeout=10, check=False)
