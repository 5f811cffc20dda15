"""`coophost artifacts list|fetch|verify`: the co-op's verified mirror of upstream artifacts."""

from __future__ import annotations

import re
from pathlib import Path

import click

from coophost.cli.options import (
    AppContext,
    escape,
    json_option,
    name_argument,
    pass_app,
    table,
)
from coophost.errors import EXIT_OK, EXIT_PENDING, EXIT_UNREACHABLE


@click.group()
def artifacts() -> None:
    """Upstream releases the co-op serves its hosts (artifacts/catalogue.yml), verified."""


def _human(size: object) -> str:
    if not isinstance(size, int):
        return "-"
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(size)


@artifacts.command("list")
@json_option
@pass_app
def list_artifacts(app: AppContext, as_json: bool) -> None:
    """The catalogue's entries and what the store holds of each (no check: see `verify`)."""
    from coophost.artifacts import catalogue, store

    entries = catalogue.select(catalogue.load(app.inventory), ())
    rows = store.listing(app.inventory, entries)
    if as_json:
        app.emit_json(rows)
        return
    if not rows:
        app.out.print("No artifacts: the co-op's catalogue (artifacts/catalogue.yml) is empty "
                      "or absent.")
        return
    table(app, ["artifact", "version", "stored", "size", "verified", "signer"],
          [[escape(str(r["name"])), escape(str(r["version"])),
            "[green]yes[/]" if r["stored"] else "[yellow]no[/]", _human(r["size"]),
            str(r["verified_at"] or "-"), str(r["signer"])[-16:]] for r in rows])


def _report(app: AppContext, outcomes: list, as_json: bool) -> int:  # type: ignore[type-arg]
    code = EXIT_OK
    for outcome in outcomes:
        if outcome.status in ("refused", "removed"):
            code = max(code, EXIT_PENDING)
        elif outcome.status == "unreachable":
            code = max(code, EXIT_UNREACHABLE)
    if as_json:
        app.emit_json([{"name": o.name, "version": o.version, "status": o.status,
                        "problems": o.problems, "url": o.url, "size": o.size}
                       for o in outcomes])
        return code
    for o in outcomes:
        label = f"{escape(o.name)} {escape(o.version)}"
        if o.status in ("fetched", "stored"):
            source = f" from {escape(o.url)}" if o.url else ""
            app.out.print(f"[green]{label}[/]: {o.status}, verified ({_human(o.size)}){source}")
        elif o.status == "missing":
            app.out.print(f"[yellow]{label}[/]: not in the store (run `coophost artifacts "
                          "fetch`)")
        else:
            verb = {"refused": "refused, nothing stored",
                    "removed": "failed its checks and was removed from the store",
                    "unreachable": "no URL could be downloaded"}[o.status]
            app.err.print(f"[red]{label}[/]: {verb}")
            for problem in o.problems:
                app.err.print(f"  {escape(problem)}")
    return code


@artifacts.command()
@click.argument("names", nargs=-1)
@click.option("--force", is_flag=True, help="Download again even when a verified copy is "
              "stored.")
@json_option
@pass_app
def fetch(app: AppContext, names: tuple[str, ...], force: bool, as_json: bool) -> int:
    """Download NAMES (default: all), check signature and SHA-256, store what passes.

    The signature must verify with the catalogue's keyring and be made by the pinned key;
    anything that fails a check is deleted, never stored.

    Exit 1 when a file is refused (each failed check is named), 4 when no URL answers.
    """
    from coophost.artifacts import catalogue, store
    from coophost.lock import coop_lock

    entries = catalogue.select(catalogue.load(app.inventory), names)
    with coop_lock(app.inventory, purpose="artifacts fetch", name=store.LOCK_NAME):
        outcomes = store.fetch(app.inventory, entries, force=force)
    return _report(app, outcomes, as_json)


@artifacts.command()
@click.argument("names", nargs=-1)
@json_option
@pass_app
def verify(app: AppContext, names: tuple[str, ...], as_json: bool) -> int:
    """Check the stored copies again (signature and SHA-256); remove any that fails.

    Exit 1 when one failed (and was removed).
    """
    from coophost.artifacts import catalogue, store
    from coophost.lock import coop_lock

    entries = catalogue.select(catalogue.load(app.inventory), names)
    with coop_lock(app.inventory, purpose="artifacts verify", name=store.LOCK_NAME):
        outcomes = store.verify(app.inventory, entries)
    return _report(app, outcomes, as_json)


@artifacts.command()
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
@json_option
@pass_app
def prune(app: AppContext, dry_run: bool, as_json: bool) -> None:
    """Remove from the store the versions (and artifacts) the catalogue no longer names.

    The mirror serves only the catalogue's versions already; this frees the controller's disk.
    """
    import shutil

    from coophost.artifacts import catalogue, store
    from coophost.lock import coop_lock

    entries = catalogue.select(catalogue.load(app.inventory), ())
    with coop_lock(app.inventory, purpose="artifacts prune", name=store.LOCK_NAME):
        gone = store.unlisted(app.inventory, entries)
        if not dry_run:
            for folder in gone:
                shutil.rmtree(folder)
    root = store.store_root(app.inventory)
    shown = [str(p.relative_to(root)) for p in gone]
    if as_json:
        app.emit_json({"removed": [] if dry_run else shown, "would_remove": shown if dry_run
                       else []})
    elif not shown:
        app.out.print("Nothing to prune: the store holds only what the catalogue names.")
    else:
        verb = "would remove" if dry_run else "removed"
        for name in shown:
            app.out.print(f"{verb} {escape(name)}")


@artifacts.command()
@name_argument("host")
@click.argument("name")
@click.option("--ca-file", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="PEM of a CA root HOST must trust for the mirror's certificate (a private "
                   "ACME CA's root, such as the lab's).")
@json_option
@pass_app
def probe(app: AppContext, host: str, name: str, ca_file: Path | None, as_json: bool) -> int:
    """Have HOST fetch artifact NAME from the co-op's mirror, as a service would.

    The host downloads it over HTTPS from the mirror (the first host of group artifacts),
    checks its SHA-256 against the catalogue's before keeping it, reports it, and removes it.
    Exit 1 when the host refused it (or the mirror does not serve it), 4 when HOST is
    unreachable.
    """
    from coophost.artifacts import catalogue
    from coophost.deploy.runner import run_playbook
    from coophost.layout import playbook
    from coophost.registry.checks import no_host
    from coophost.registry.loader import load_hosts

    hosts = load_hosts(app.inventory)
    if host not in hosts:
        raise no_host(host, hosts)
    [artifact] = catalogue.select(catalogue.load(app.inventory), (name,))
    extravars: dict[str, str] = {"artifacts_get_name": name}
    if ca_file is not None:
        extravars["artifacts_ca_certificate"] = ca_file.read_text()
    result = run_playbook(playbook("artifact-probe.yml"), app.inventory, limit=[host],
                          extravars=extravars)
    found = re.search(rf"artifact {re.escape(name)}: sha256 ([0-9a-f]{{64}}), (\d+) bytes",
                      result.stdout)
    ok = result.ok and found is not None and found.group(1) == artifact.sha256
    code = EXIT_OK if ok else (EXIT_UNREACHABLE if result.hosts_with("dark") else EXIT_PENDING)
    reasons = [line.strip() for line in result.stdout.splitlines()
               if '"msg"' in line or "FAILED" in line][-4:]
    if as_json:
        app.emit_json({"host": host, "artifact": name, "version": artifact.version, "ok": ok,
                       "sha256": found.group(1) if found else None,
                       "size": int(found.group(2)) if found else None,
                       "problems": [] if ok else reasons})
    elif ok:
        assert found is not None
        app.out.print(f"[green]{escape(host)}[/] fetched {escape(name)} {escape(artifact.version)}"
                      f" from the mirror: SHA-256 matches the catalogue ({found.group(2)} bytes)")
    else:
        app.err.print(f"[red]{escape(host)}[/] did not get {escape(name)} "
                      f"{escape(artifact.version)} from the mirror ({result.status}):")
        for line in reasons or result.stdout.splitlines()[-10:]:
            app.err.print(f"  {escape(line)}")
    return code


commands: list[click.Command] = [artifacts]
