"""`coophost artifacts list|fetch|verify`: the co-op's verified mirror of upstream artifacts."""

from __future__ import annotations

import click

from coophost.cli.options import AppContext, escape, json_option, pass_app, table
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


commands: list[click.Command] = [artifacts]
