"""Benchmark health checks: `coophost status` against what a sysadmin would run otherwise.

On a deployed co-op (the demo lab: `make demo` first), side by side, each timed `--runs` times
(median printed) over every host:

- `coophost status --no-backups --json`: every declared unit, port, certificate, the mail
  queue, disk and memory of each host, one SSH session per host, all hosts at once;
- `ansible all -m ansible.builtin.service_facts` (only the state of services, nothing else),
  with Ansible's ssh connection and with mitogen's strategy: the strongest alternative a user
  could pick, run with the same ansible.cfg and pinned host keys coophost uses.

    .venv/bin/python bench/status.py [--inventory inventories/lab] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from deploy import run as timed  # noqa: E402 - bench/deploy.py, beside this script

BIN = Path(sys.executable).parent


def main() -> int:
    """Time each way `--runs` times, print medians and ratios."""
    from coophost.deploy.executor import mitogen_available, mitogen_env
    from coophost.deploy.runner import ansible_env, pinned_extravars

    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--inventory", type=Path, default=REPO / "inventories" / "lab")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    inventory = args.inventory.resolve()
    if not (inventory / "hosts.yml").is_file():
        sys.exit(f"bench: {inventory} has no hosts.yml: run `make demo` first")
    env = {**os.environ, **ansible_env(inventory)}
    extra = json.dumps(pinned_extravars(inventory))
    ways: dict[str, tuple[list[str], dict[str, str] | None, tuple[int, ...]]] = {
        "coophost status": ([str(BIN / "coophost"), "-i", str(inventory), "status",
                             "--no-backups", "--json"], None, (0, 1)),
        "ansible service_facts (ssh)": (
            [str(BIN / "ansible"), "all", "-i", str(inventory / "hosts.yml"), "-m",
             "ansible.builtin.service_facts", "-e", extra, "-o"], env, (0,)),
    }
    if mitogen_available():
        ways["ansible service_facts (mitogen)"] = (ways["ansible service_facts (ssh)"][0],
                                                   {**env, **mitogen_env()}, (0,))
    hosts = subprocess.run([str(BIN / "coophost"), "-i", str(inventory), "host", "list",
                            "--json"], capture_output=True, text=True, check=True).stdout
    count = len(json.loads(hosts))
    times: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(args.runs):  # interleaved: a noisy moment hits every way alike
        for name, (argv, run_env, ok) in ways.items():
            times[name].append(timed(argv, run_env, ok))
    base = statistics.median(times["coophost status"])
    print(f"bench status: {count} hosts, median of {args.runs} runs each")
    for name, found in times.items():
        median = statistics.median(found)
        print(f"  {name:34} {median:6.2f} s   {median / base:5.2f}x coophost status")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
