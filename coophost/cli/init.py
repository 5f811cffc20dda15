"""`coophost init`: a new co-op directory."""

from __future__ import annotations

from pathlib import Path

import click

from coophost.cli.options import AppContext, escape, next_step, pass_app


@click.command()
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False))
@click.option("--name", required=True, help="The co-op's name.")
@click.option("--domain", required=True, help="The co-op's primary domain.")
@click.option("--contact", required=True, help="The sysadmins' contact address.")
@pass_app
def init(app: AppContext, directory: Path, name: str, domain: str, contact: str) -> None:
    """Create a new co-op directory (coop.yml, hosts.yml, members/, secrets/)."""
    from coophost.registry.init import init_coop

    created = init_coop(directory, name=name, domain=domain, contact=contact)
    for path in created:
        app.out.print(f"created {escape(str(path))}")
    next_step(app, f"coophost -i {directory} host add NAME --address ADDRESS")


commands: list[click.Command] = [init]
