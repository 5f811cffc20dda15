"""`coophost workers list|check|setup`: the execution nodes of hosts.yml (coophost_workers)."""

from __future__ import annotations

import click

from coophost.cli.options import AppContext, escape, json_option, pass_app, table
from coophost.errors import EXIT_OK, EXIT_PENDING, CoophostError, HostUnreachable


@click.group()
def workers() -> None:
    """Execution nodes: the workers that run host jobs for the hosts they serve."""


def _load(app: AppContext) -> list:  # type: ignore[type-arg]
    from coophost.registry.loader import load_workers

    return load_workers(app.inventory)


@workers.command("list")
@json_option
@pass_app
def list_workers(app: AppContext, as_json: bool) -> None:
    """List the workers with what they serve and their capacity (jobs at once)."""
    found = _load(app)
    if as_json:
        app.emit_json([{"name": w.name, "address": f"{w.connection.address}:{w.connection.port}",
                        "serves": list(w.serves), "capacity": w.capacity,
                        "jobs_dir": w.jobs_dir, "transport": w.transport} for w in found])
        return
    if not found:
        app.out.print("No workers: every host's job runs on this controller "
                      "(declare some in hosts.yml, group coophost_workers).")
        return
    table(app, ["worker", "address", "serves", "capacity"],
          [[escape(w.name), f"{w.connection.address}:{w.connection.port}",
            escape(", ".join(w.serves)), str(w.capacity)] for w in found])


@workers.command()
@json_option
@pass_app
def check(app: AppContext, as_json: bool) -> int:
    """Connect to each worker (pinned key) and compare its versions with the controller's.

    A receptor worker is asked over the mesh (signed work), an SSH one over its forced
    command. Exit 1 when a worker's ansible-core, ansible-runner or mitogen differ; 4 when one
    cannot be reached.
    """
    from coophost.deploy.remote import (
        controller_versions,
        version_mismatches,
        worker_info,
        worker_versions,
    )
    from coophost.errors import EXIT_UNREACHABLE
    from coophost.layout import KNOWN_HOSTS_FILE

    known = app.inventory / KNOWN_HOSTS_FILE
    ours = controller_versions()
    report = []
    code = EXIT_OK
    found_workers = _load(app)
    mesh = [w for w in found_workers if w.transport == "receptor"]
    node = None
    if mesh:  # the controller's receptor node, for as long as the check takes
        from coophost.deploy.receptor import Node
        from coophost.layout import STATE_DIR

        node = Node(app.inventory / STATE_DIR, [(w.connection.address, w.receptor_port)
                                                for w in mesh])
        node.start([(w.name, w.connection.address) for w in mesh])
    try:
        for worker in found_workers:
            row: dict[str, object] = {"name": worker.name, "ok": False,
                                      "transport": worker.transport}
            try:
                info = worker_info(worker, known, node)
                found = worker_versions(worker, known, node)
            except HostUnreachable as exc:
                row["error"] = exc.message
                code = max(code, EXIT_UNREACHABLE)
                report.append(row)
                continue
            wrong = version_mismatches(ours, found)
            row.update(versions=found, worker_info={k: info.get(k) for k in
                                                    ("runner_version", "cpu_count",
                                                     "mem_in_bytes", "errors") if k in info},
                       mismatches=wrong, ok=not wrong)
            if wrong:
                row["error"] = ("refused: versions differ from the controller's: "
                                + ", ".join(wrong))
                code = max(code, EXIT_PENDING)
            report.append(row)
    finally:
        if node is not None:
            node.stop()
    if as_json:
        app.emit_json({"controller": ours, "workers": report})
        return code
    for row in report:
        if row.get("ok"):
            versions = row["versions"]
            assert isinstance(versions, dict)
            app.out.print(f"[green]{escape(str(row['name']))}[/]: ok, " + ", ".join(
                f"{k} {versions.get(k)}" for k in ours))
        else:
            app.err.print(f"[red]{escape(str(row['name']))}[/]: {escape(str(row['error']))}")
    return code


@workers.command()
@click.option("--python-version", default="3.11", show_default=True,
              help="The workers' CPython version (Debian 12: 3.11), for the wheels.")
@json_option
@pass_app
def setup(app: AppContext, python_version: str, as_json: bool) -> int:
    """Install or update every worker: the controller's exact versions and the forced command."""
    import paramiko

    from coophost.deploy.remote import build_wheelhouse
    from coophost.deploy.runner import run_playbook
    from coophost.errors import EXIT_UNREACHABLE
    from coophost.layout import STATE_DIR, playbook

    found = _load(app)
    if not found:
        raise CoophostError("no workers in hosts.yml (group coophost_workers)")
    wheels = app.inventory / STATE_DIR / "wheelhouse"
    pins = build_wheelhouse(wheels, python_version)
    keys = []
    for worker in found:
        if not worker.connection.key_file:
            raise CoophostError(f"worker {worker.name}: hosts.yml names no "
                                "ansible_ssh_private_key_file: no controller key to authorize")
        key = paramiko.PKey.from_path(worker.connection.key_file)
        line = f"{key.get_name()} {key.get_base64()} coophost-controller"
        if line not in keys:
            keys.append(line)
    extravars: dict[str, object] = {"worker_packages": pins,
                                    "worker_wheelhouse": str(wheels.resolve()),
                                    "worker_controller_keys": keys}
    receptor = [w for w in found if w.transport == "receptor"]
    if receptor:  # the co-op's receptor PKI: what is missing is made here, the CA key stays
        from coophost.deploy.receptor import CONTROLLER_NODE, PKI_DIR, ensure_pki

        pki = ensure_pki(app.inventory / STATE_DIR / PKI_DIR,
                         [(CONTROLLER_NODE, ""), *((w.name, w.connection.address)
                                                   for w in receptor)])
        nodes = pki.folder.resolve() / "nodes"
        extravars.update(
            worker_receptor_ca_cert=str(pki.ca_cert.resolve()),
            worker_receptor_signing_public=str(pki.signing_public.resolve()),
            worker_receptor_node_cert=f"{nodes}/{{{{ inventory_hostname }}}}.crt",
            worker_receptor_node_key=f"{nodes}/{{{{ inventory_hostname }}}}.key")
    result = run_playbook(playbook("worker.yml"), app.inventory,
                          limit=[w.name for w in found], extravars=extravars)
    if as_json:
        app.emit_json({"status": result.status, "pins": pins,
                       "changed": result.hosts_with("changed"),
                       "failed": result.hosts_with("failures"),
                       "unreachable": result.hosts_with("dark")})
    elif result.ok:
        app.out.print(f"workers set up with {', '.join(pins)}: "
                      + ", ".join(w.name for w in found))
    else:
        app.err.print(f"[red]worker setup {result.status}[/]\n"
                      + "\n".join(result.stdout.splitlines()[-25:]))
    if result.hosts_with("dark"):
        return EXIT_UNREACHABLE
    return EXIT_OK if result.ok else EXIT_PENDING


@workers.command()
@json_option
@pass_app
def reattach(app: AppContext, as_json: bool) -> int:
    """Re-attach to the Receptor work units a lost controller left, and read their results.

    A deploy records each receptor job's work unit until its output was read whole. After
    the controller went away midway (killed, disconnected), this reads each recorded unit's
    whole output from the worker (the play went on there), reports each host's recap,
    records each host's outcome in the deploy's run as the deploy would have (a host that
    converged as running what the job applied), and releases the unit; `deploy --resume`
    then reruns only the hosts that did not converge. Holds the co-op's lock (exit 3 while a
    deploy runs). Exit 4 when a unit's results could not be had (its record is kept).
    """
    from coophost.deploy.engine import record_reattached
    from coophost.deploy.remote import reattach as reattach_unit
    from coophost.deploy.remote import recorded_units
    from coophost.errors import EXIT_UNREACHABLE
    from coophost.fsutil import private_folder
    from coophost.lock import coop_lock

    found = _load(app)
    report = []
    code = EXIT_OK
    with coop_lock(app.inventory, purpose="workers reattach"):
        for record in recorded_units(app.inventory):
            with private_folder("coophost-reattach-") as receiving:
                result = reattach_unit(app.inventory, found, record, receiving)
            if result.node is not None:
                result.node.stop()
            recorded = (record_reattached(app.inventory, record, result.outcomes)
                        if result.status else {})
            hosts = {h: {**{kind: int((result.stats.get(kind) or {}).get(h, 0))
                            for kind in ("ok", "changed", "failures", "dark")},
                         "state": recorded.get(h, "not recorded: no results")}
                     for h in record.get("hosts") or []}
            report.append({"job": record["job"], "worker": record["worker"],
                           "unit": record["unit"], "status": result.status, "hosts": hosts,
                           "error": result.why})
            if not result.status:
                code = max(code, EXIT_UNREACHABLE)
    if as_json:
        app.emit_json(report)
        return code
    if not report:
        app.out.print("No receptor work unit left to re-attach.")
    for row in report:
        if row["status"]:
            app.out.print(f"job {row['job']} on {escape(str(row['worker']))}: {row['status']}; "
                          + "; ".join(f"{escape(h)} ok={c['ok']} changed={c['changed']} "
                                      f"failed={c['failures']} unreachable={c['dark']}, "
                                      f"{escape(str(c['state']))}"
                                      for h, c in row["hosts"].items()))
        else:
            app.err.print(f"[red]job {row['job']} on {escape(str(row['worker']))}[/]: "
                          f"{escape(str(row['error']))}")
    return code


commands: list[click.Command] = [workers]
