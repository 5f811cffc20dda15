"""Benchmark `coophost deploy` on the lab, side by side with plain ansible-playbook.

One run on one lab (default 4 hosts, 40 members with mail), all on the same machine in the
same minutes, so the ratios mean something even when the machine is noisy:

(a) full deploy of every host: coophost (one job per host; one batch job; with mitogen)
    against plain `ansible-playbook playbooks/site.yml` with Ansible's defaults, tuned
    ansible-playbook (pipelining, forks >= hosts, free strategy), and one tuned
    ansible-playbook run per member in sequence; the floor is the slowest single host's
    apply run alone. Hosts are provisioned once before (packages installed), so every
    approach applies the same state to the same hosts and none pays the downloads.
(b) redeploy with nothing changed, with 1,000 members registered (hosts never contacted).
(c) redeploy after one member changed, against applying that member's host alone.
(d) one mailbox added to a member on a converged host, until a message to it is accepted (RCPT
    TO on the host's port 25): the deploy's fast path (playbooks/units.yml), the full host play
    (`deploy --full`), and plain ansible-playbook site.yml with mitogen limited to that host
    (host vars rendered first, not timed); rounds interleaved, medians.

    .venv/bin/python bench/deploy.py [--hosts 4] [--members 40] [--skip-per-member] [--keep]
                                     [--baseline TREE [--repeat 2]]
    .venv/bin/python bench/deploy.py --shapes INVENTORY [--repeat 3]

`--shapes INVENTORY` takes an already deployed lab co-op (e.g. inventories/lab after `make
demo`) and compares, interleaved, full deploys of every host (`deploy --all`): coophost's one
job (the default), coophost's job per host, and the strongest plain alternative,
`ansible-playbook site.yml` with mitogen's free strategy and the same tuned settings; wall
seconds and the controller's CPU seconds of each, medians and ratios.

    .venv/bin/python bench/deploy.py --fast-path-only COOP --name LAB [--repeat 3]

`--fast-path-only` runs (d) alone, on a lab co-op that is up and deployed (`make demo`): its
member files are edited and restored.

`--baseline TREE` compares this checkout with another one (with its own .venv, e.g. a worktree
of an older commit) instead of with ansible-playbook: on the same lab, each on its own copy of
the co-op, interleaved (this, baseline, baseline, this, ...), (a) with mitogen, job per host and
batch, (b) and (c); it prints both with their ratio.

Targets (issue 4): (a) >= 1.5x faster than tuned ansible-playbook and within 1.3x of the
floor; (b) <= 2 s; (c) <= 1.2x applying that one host alone.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
COOPHOST = [str(BIN / "coophost")]
PLAYBOOK = str(REPO / "playbooks" / "site.yml")
COOP = """\
name: Bench Co-op
domain: bench.test
contacts: [admin@bench.test]
acme: {directory: "https://acme.bench.test:14000/dir", email: admin@bench.test}
vault: {password_file: vault-password, create_password_file: true}
"""


CPU: list[float] = []  # the controller CPU seconds of each `run`, in order


def run(argv: list[str], env: dict[str, str] | None = None, ok: tuple[int, ...] = (0,)) -> float:
    """Run a command and return its wall time; fail loudly on an unexpected exit status.

    Its CPU time (the command and its children) is appended to CPU.
    """
    before = os.times()
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    took = time.perf_counter() - start
    after = os.times()
    CPU.append(after.children_user - before.children_user
               + after.children_system - before.children_system)
    if proc.returncode not in ok:
        sys.exit(f"bench: {' '.join(argv[:6])}... exited {proc.returncode}:\n"
                 f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return took


def coophost(root: Path, *args: str, ok: tuple[int, ...] = (0,),
             command: list[str] | None = None) -> float:
    """Time one coophost command on the co-op at `root` (this checkout's, or `command`)."""
    return run([*(command or COOPHOST), "-i", str(root), *args], ok=ok)


def write_members(root: Path, count: int) -> None:
    """`count` members with mail (placed by the first deploy)."""
    (root / "members").mkdir(parents=True, exist_ok=True)
    for n in range(count):
        slug = f"member-{n:03d}"
        (root / "members" / f"{slug}.yml").write_text(
            f"slug: {slug}\nname: \"Member {n}\"\ncontact: office@{slug}.test\n"
            f"status: active\ndomains:\n  - {slug}.test\nssh_keys: []\nservices:\n"
            f"  mail:\n    mailboxes: [office, info]\n    aliases:\n      postmaster: [office]\n"
            f"    quota_mb: 1024\nplacement: {{}}\n")


def ansible_env(root: Path, tuned: bool) -> dict[str, str]:
    """Environment for plain ansible-playbook: the repo's tuned config, or Ansible's defaults."""
    from coophost.deploy.runner import ansible_env as coophost_env

    env = dict(os.environ)
    env["ANSIBLE_VAULT_PASSWORD_FILE"] = str(root / "vault-password")
    if tuned:
        env.update(coophost_env(root))
        env["ANSIBLE_STRATEGY"] = "free"
    else:
        plain = root / "defaults.cfg"
        plain.write_text(f"[defaults]\nroles_path = {REPO / 'roles'}:{REPO / 'services'}\n")
        env["ANSIBLE_CONFIG"] = str(plain)
    return env


def playbook(root: Path, env: dict[str, str], *extra: str) -> float:
    """Time ansible-playbook site.yml on the co-op's inventory."""
    return run([str(BIN / "ansible-playbook"), "-i", str(root / "hosts.yml"), PLAYBOOK, *extra],
               env=env)


def mitogen_playbook(root: Path) -> float:
    """Time ansible-playbook site.yml with the tuned settings and mitogen's free strategy."""
    from coophost.deploy.executor import mitogen_env

    env = ansible_env(root, tuned=True)
    env.update(mitogen_env("free"))
    return playbook(root, env, "--forks", "20")


def bench_shapes(root: Path, repeat: int) -> int:
    """Full deploys of a converged co-op, each shape interleaved; print medians and ratios."""
    shapes = {
        "coophost deploy --all (one job, default)": lambda: coophost(root, "deploy", "--all"),
        "coophost deploy --all --mode per-host":
            lambda: coophost(root, "deploy", "--all", "--mode", "per-host"),
        "ansible-playbook + mitogen_free (tuned)": lambda: mitogen_playbook(root)}
    wall: dict[str, list[float]] = {label: [] for label in shapes}
    cpu: dict[str, list[float]] = {label: [] for label in shapes}
    labels = list(shapes)
    load = os.getloadavg()[0]
    for i in range(repeat):
        for label in labels[i % len(labels):] + labels[:i % len(labels)]:  # rotate the order
            wall[label].append(shapes[label]())
            cpu[label].append(CPU[-1])
    base = labels[-1]
    med = {label: (statistics.median(wall[label]), statistics.median(cpu[label]))
           for label in labels}
    print(f"full deploy of every host of {root.name}, median of {repeat} interleaved rounds; "
          f"load {load:.1f} -> {os.getloadavg()[0]:.1f}")
    print(f"  {'':44s} {'wall':>8} {'vs ap':>6} {'CPU':>8} {'vs ap':>6}")
    for label, (w, c) in med.items():
        print(f"  {label:44s} {w:7.1f}s {med[base][0] / w:5.2f}x {c:7.1f}s "
              f"{med[base][1] / c:5.2f}x")
    print("  (vs ap: ansible-playbook + mitogen's time divided by this one's; > 1 is faster)")
    print(json.dumps({"shapes": {label: {"wall": wall[label], "cpu": cpu[label]}
                                 for label in labels}}))
    return 0


def forget_applied(root: Path) -> None:
    """Drop the applied record so that the next deploy applies every host."""
    import sqlite3

    with sqlite3.connect(root / ".coophost" / "state.db") as conn:
        conn.execute("DELETE FROM applied_unit")
        conn.execute("DELETE FROM applied_host")


def placements(root: Path) -> dict[str, str]:
    """member -> host of its mail unit, from the member files."""
    result = {}
    for path in (root / "members").glob("*.yml"):
        for line in path.read_text().split("placement:", 1)[1].splitlines():
            if "mail:" in line:
                result[path.stem] = line.split(":", 1)[1].strip(" }")
    return result


def bench_full(root: Path, hosts: int, per_member: bool) -> dict[str, float]:
    """(a): every approach applies the whole co-op to already provisioned hosts."""
    figures: dict[str, float] = {}
    variants = (("coophost, job per host", ["--no-mitogen", "--mode", "per-host"]),
                ("coophost, one batch job", ["--no-mitogen", "--mode", "batch"]),
                ("coophost + mitogen, job per host", ["--mitogen", "--mode", "per-host"]),
                ("coophost + mitogen, one batch job", ["--mitogen", "--mode", "batch"]))
    for label, flags in variants:
        forget_applied(root)
        figures[label] = coophost(root, "deploy", "--json", *flags)
    figures["floor + mitogen (slowest host alone)"] = max(
        coophost(root, "deploy", "--all", "--mitogen", "--host", f"h{i}")
        for i in range(1, hosts + 1))
    figures["ansible-playbook, defaults"] = playbook(root, ansible_env(root, tuned=False))
    tuned = ansible_env(root, tuned=True)
    figures["ansible-playbook, tuned"] = playbook(root, tuned, "--forks", str(hosts))
    figures["ansible-playbook + mitogen_free, tuned"] = mitogen_playbook(root)
    singles = [playbook(root, tuned, "--limit", f"h{i}") for i in range(1, hosts + 1)]
    figures["floor (slowest host alone)"] = max(singles)
    if per_member:
        figures["ansible-playbook per member"] = sum(
            playbook(root, tuned, "--limit", host) for host in placements(root).values())
    return figures


def compare(root: Path, tree: Path, repeat: int, registered: int) -> dict[str, list[float]]:
    """(a), (b) and (c) for this checkout and the one at `tree`, interleaved on one lab.

    Returns label -> [this, baseline] medians.
    """
    spec = importlib.util.spec_from_file_location("bench_plan", REPO / "bench" / "plan.py")
    assert spec and spec.loader
    plan_bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plan_bench)
    other = root.parent / "coop-baseline"
    shutil.copytree(root, other, symlinks=True)
    sides = {"this": (root, COOPHOST), "baseline": (other, [str(tree / ".venv/bin/coophost")])}
    times: dict[str, dict[str, list[float]]] = {}

    def timed(label: str, side: str, seconds: float) -> None:
        times.setdefault(label, {"this": [], "baseline": []})[side].append(seconds)

    orders = [["this", "baseline"], ["baseline", "this"]]
    for i in range(repeat):
        for label, flags in (("(a) coophost + mitogen, job per host",
                              ["--mitogen", "--mode", "per-host"]),
                             ("(a) coophost + mitogen, one batch job",
                              ["--mitogen", "--mode", "batch"])):
            for side in orders[i % 2]:
                coop, command = sides[side]
                forget_applied(coop)
                timed(label, side, coophost(coop, "deploy", "--json", *flags, command=command))
    member, _host = sorted(placements(root).items())[0]
    for i in range(repeat):
        for side in orders[i % 2]:
            coop, command = sides[side]
            quota = 1100 + 10 * i + (5 if side == "baseline" else 0)  # a real change each time
            coophost(coop, "service", "enable", member, "mail", "--set", f"quota_mb={quota}",
                     command=command)
            timed("(c) one member changed", side, coophost(coop, "deploy", command=command))
    with tempfile.TemporaryDirectory(prefix="coophost-bench-") as tmp:
        twins = {side: Path(tmp) / side for side in sides}
        for coop in twins.values():
            plan_bench.generate(coop, registered, 4)  # unroutable hosts: never contacted
        plan_bench.record_applied(twins["this"])
        plan_bench.record_applied_with(tree, twins["baseline"])
        for side, coop in twins.items():
            coophost(coop, "plan", command=sides[side][1])  # warms the parse cache
        for i in range(max(repeat, 3)):
            for side in orders[i % 2]:
                timed(f"(b) nothing changed, {registered} members", side,
                      coophost(twins[side], "deploy", command=sides[side][1]))
    return {label: [statistics.median(per["this"]), statistics.median(per["baseline"])]
            for label, per in times.items()}


def bench_nothing_changed(members: int, repeat: int) -> float:
    """(b): a registry of `members` members, all recorded as applied; median deploy time."""
    spec = importlib.util.spec_from_file_location("bench_plan", REPO / "bench" / "plan.py")
    assert spec and spec.loader
    plan_bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plan_bench)
    with tempfile.TemporaryDirectory(prefix="coophost-bench-") as tmp:
        root = Path(tmp) / "coop"
        plan_bench.generate(root, members, 4)  # hosts on unroutable addresses: never contacted
        plan_bench.record_applied(root)
        coophost(root, "plan")  # warms the parse cache, as any earlier command would
        return statistics.median(coophost(root, "deploy") for _ in range(repeat))


def bench_one_change(root: Path) -> tuple[float, float, float]:
    """(c): one member's change deployed, against applying its host alone (same engine and
    accelerator: `deploy --all --host H`; and plain tuned ansible-playbook --limit H)."""
    member, host = sorted(placements(root).items())[0]
    coophost(root, "service", "enable", member, "mail", "--set", "quota_mb=1100")
    deploy = coophost(root, "deploy")  # the default: mitogen when installed
    alone = coophost(root, "deploy", "--all", "--host", host)
    plain = playbook(root, ansible_env(root, tuned=True), "--limit", host)
    return deploy, alone, plain


def mitogen_playbook_env(root: Path) -> dict[str, str]:
    """Tuned ansible-playbook with mitogen's linear strategy (as coophost runs it)."""
    from coophost.deploy.executor import mitogen_env

    env = ansible_env(root, tuned=True)
    env.update(mitogen_env("linear"))
    return env


def mail_accepted(address: str, host_ip: str, timeout: float = 60.0) -> float:
    """Wait until the host's port 25 accepts RCPT TO `address`; return the seconds waited."""
    import smtplib

    start = time.perf_counter()
    while True:
        try:
            with smtplib.SMTP(host_ip, 25, timeout=10) as smtp:
                smtp.ehlo("bench.test")
                smtp.mail("bench@bench.test")
                code, _ = smtp.rcpt(address)
                smtp.rset()
            if code == 250:
                return time.perf_counter() - start
        except (OSError, smtplib.SMTPException):
            pass
        if time.perf_counter() - start > timeout:
            sys.exit(f"bench: {host_ip}:25 never accepted {address}")
        time.sleep(0.2)


def took_path(root: Path, host: str, path: str, *flags: str) -> None:
    """`deploy --mitogen --json FLAGS`; exit unless `host` took `path` and succeeded."""
    proc = subprocess.run([*COOPHOST, "-i", str(root), "deploy", "--mitogen", "--json", *flags],
                          capture_output=True, text=True, check=False)
    job = json.loads(proc.stdout or "{}").get("hosts", {}).get(host, {}) if proc.stdout else {}
    if proc.returncode != 0 or job.get("path") != path:
        sys.exit(f"bench: deploy {' '.join(flags)} on {host}: exit {proc.returncode}, path "
                 f"{job.get('path')} ({job.get('why')}), not {path}:\n{proc.stderr[-2000:]}")


def bench_fast_path(root: Path, lab: str, rounds: int) -> dict[str, list[float]]:
    """(d): a new mailbox until mail to it is accepted, three ways, interleaved rounds."""
    from coophost.lab.lab import Lab
    from coophost.lab.mailcheck import lab_state

    member_file, text, host = None, "", ""
    for path in sorted((root / "members").glob("*.yml")):
        text = path.read_text()
        if "mailboxes: [" in text and "  mail: h" in text:
            member_file = path
            host = text.split("  mail: ", 1)[1].split()[0]
            break
    if member_file is None:
        sys.exit(f"bench: no member of {root} has its mail placed with inline mailboxes")
    domain = text.split("domains:\n  - ", 1)[1].split()[0]
    ip = next(h.ip for h in lab_state(Lab(lab, root)).hosts if h.name == host)
    mitogen = mitogen_playbook_env(root)
    ways: dict[str, list[str] | None] = {"fast path (coophost deploy)": [],
                                         "full host play (coophost deploy --full)": ["--full"],
                                         "ansible-playbook + mitogen, site.yml -l host": None}
    figures: dict[str, list[float]] = {label: [] for label in ways}
    counter = 0
    try:
        for _ in range(rounds):
            for label, flags in ways.items():
                counter += 1
                box = f"bench{counter}"
                start = time.perf_counter()
                member_file.write_text(text.replace("mailboxes: [", f"mailboxes: [{box}, ", 1))
                if flags is None:
                    coophost(root, "render")  # ansible-playbook reads the rendered host vars
                    start = time.perf_counter()
                    playbook(root, mitogen, "--limit", host)
                else:
                    took_path(root, host, "full" if flags else "fast", *flags)
                mail_accepted(f"{box}@{domain}", ip)
                figures[label].append(time.perf_counter() - start)
                print(f"  {label}: {figures[label][-1]:.1f} s", flush=True)
    finally:
        member_file.write_text(text)
        coophost(root, "deploy", "--mitogen")
    return figures


def print_fast_path(figures: dict[str, list[float]]) -> None:
    """(d)'s medians and ratios against the fast path."""
    medians = {label: statistics.median(times) for label, times in figures.items()}
    fast = medians["fast path (coophost deploy)"]
    print(f"(d) one mailbox added until mail to it is accepted (median of "
          f"{len(next(iter(figures.values())))} interleaved rounds; target <= 5 s)")
    for label, seconds in medians.items():
        print(f"  {label:46s} {seconds:6.1f} s   x{seconds / fast:5.2f} of the fast path")
    print(json.dumps({"fast_path": figures}))


def main() -> int:
    """Run the benchmark and print figures and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--hosts", type=int, default=4)
    parser.add_argument("--members", type=int, default=40)
    parser.add_argument("--registered", type=int, default=1000)
    parser.add_argument("--skip-per-member", action="store_true")
    parser.add_argument("--keep", action="store_true", help="leave the lab up afterwards")
    parser.add_argument("--name", default="bench")
    parser.add_argument("--baseline", type=Path, metavar="TREE",
                        help="compare with the coophost checkout at TREE (with its .venv)")
    parser.add_argument("--repeat", type=int, default=2,
                        help="rounds of --baseline's runs, of --shapes', or of (d)'s")
    parser.add_argument("--shapes", type=Path, metavar="INVENTORY",
                        help="compare full-deploy shapes on this deployed co-op and stop")
    parser.add_argument("--fast-path-only", type=Path, metavar="COOP",
                        help="only (d), on the deployed lab co-op COOP (lab --name)")
    args = parser.parse_args()
    if args.shapes:
        return bench_shapes(args.shapes.resolve(), args.repeat)
    if args.fast_path_only:
        print_fast_path(bench_fast_path(args.fast_path_only.resolve(), args.name, args.repeat))
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="coophost-bench-"))
    root = tmp / "coop"
    root.mkdir()
    (root / "coop.yml").write_text(COOP.replace("acme.bench.test", f"acme.{args.name}.test"))
    write_members(root, args.members)
    try:
        coophost(root, "lab", "up", "--name", args.name, "--hosts", str(args.hosts))
        provision = coophost(root, "deploy")  # packages installed once, before any timing
        print(f"provisioning (not compared): {provision:.1f} s", flush=True)
        if args.baseline:
            load = os.getloadavg()[0]
            figures = compare(root, args.baseline.resolve(), args.repeat, args.registered)
            print(f"\ncoophost deploy, this checkout against the baseline, {args.hosts} hosts, "
                  f"{args.members} members, median of {args.repeat} interleaved rounds; load "
                  f"{load:.1f} -> {os.getloadavg()[0]:.1f}")
            print(f"  {'':44s} {'baseline':>9} {'this':>9} {'this/baseline':>14}")
            for label, (this, before) in figures.items():
                print(f"  {label:44s} {before:8.2f}s {this:8.2f}s {this / before:14.2f}")
            print(json.dumps({"compare": figures}))
            return 0
        full = bench_full(root, args.hosts, not args.skip_per_member)
        nothing = bench_nothing_changed(args.registered, 3)
        one, alone, plain_alone = bench_one_change(root)
        fast_path = bench_fast_path(root, args.name, args.repeat)
    finally:
        if not args.keep:
            coophost(root, "lab", "down", "--name", args.name)
            shutil.rmtree(tmp, ignore_errors=True)
    ours = full["coophost + mitogen, one batch job"]  # the default
    print(f"\n(a) full deploy, {args.hosts} hosts, {args.members} members (wall seconds)")
    for label, seconds in full.items():
        print(f"  {label:32s} {seconds:7.1f}   x{seconds / ours:5.2f} of coophost")
    best = min(v for k, v in full.items() if k.startswith("coophost"))
    print(f"  coophost's default vs ansible-playbook + mitogen: "
          f"{full['ansible-playbook + mitogen_free, tuned'] / ours:.2f}x (target >= 1.0x)")
    print(f"  fastest coophost vs tuned ansible-playbook: "
          f"{full['ansible-playbook, tuned'] / best:.2f}x faster (target >= 1.5x)")
    print(f"  fastest coophost vs floor: {best / full['floor (slowest host alone)']:.2f}x, "
          f"vs the floor with mitogen: {best / full['floor + mitogen (slowest host alone)']:.2f}x"
          " (target <= 1.3x)")
    print(f"(b) redeploy, nothing changed, {args.registered} members: {nothing:.2f} s "
          "(target <= 2 s)")
    print(f"(c) one member changed: coophost {one:.1f} s, its host alone {alone:.1f} s: "
          f"{one / alone:.2f}x (target <= 1.2x); plain tuned ansible-playbook on that host "
          f"{plain_alone:.1f} s")
    print_fast_path(fast_path)
    print(json.dumps({"full": full, "nothing_changed": nothing, "one_change": one,
                      "one_host_alone": alone, "one_host_plain": plain_alone}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
