"""Controller CPU per host-deploy: a job run locally against the same job run on a worker.

On a lab with at least one worker (`coophost lab up --workers 1`, `coophost workers setup`),
deploys the same hosts again and again (`deploy --all --host H`: nothing changes, the same
tasks run each time), interleaved local / worker, and reports the controller's CPU seconds
(user + system of coophost and every process it waited for: ansible-playbook, its forks, ssh)
per host-deploy, and the wall time. The worker's own CPU is not the controller's and is not
counted; that is the point of a worker.

    .venv/bin/python bench/workers.py -i inventories/NAME [--host h1 --host h2] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

COOPHOST = [sys.executable, "-m", "coophost"]


def one_deploy(inventory: str, hosts: list[str], local: bool) -> tuple[float, float]:
    """Run one deploy of `hosts`; return (controller CPU seconds, wall seconds)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    argv = [*COOPHOST, "-i", inventory, "deploy", "--all", "--json",
            *[arg for host in hosts for arg in ("--host", host)],
            *(["--local"] if local else [])]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"bench: {' '.join(argv)} exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    statuses = {h: o["status"] for h, o in json.loads(proc.stdout)["hosts"].items()}
    if set(statuses.values()) != {"ok"}:
        sys.exit(f"bench: not every host ok: {statuses}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, wall


def main() -> None:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-i", "--inventory", required=True)
    parser.add_argument("--host", dest="hosts", action="append", default=[])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    hosts = args.hosts or ["h1"]
    found: dict[str, list[tuple[float, float]]] = {"local": [], "worker": []}
    for index in range(args.repeat):
        order = ["local", "worker"] if index % 2 == 0 else ["worker", "local"]
        for way in order:
            found[way].append(one_deploy(args.inventory, hosts, way == "local"))
    print(f"{len(hosts)} host(s) per deploy, {args.repeat} deploys each way, interleaved")
    print(f"{'way':8} {'controller CPU s / host-deploy':>32} {'wall s / deploy':>16}")
    for way, runs in found.items():
        cpu = statistics.median(c for c, _ in runs) / len(hosts)
        wall = statistics.median(w for _, w in runs)
        print(f"{way:8} {cpu:32.2f} {wall:16.1f}")
    local = statistics.median(c for c, _ in found["local"])
    worker = statistics.median(c for c, _ in found["worker"])
    print(f"controller CPU through a worker: {worker / local:.2f}x of local")


if __name__ == "__main__":
    main()
