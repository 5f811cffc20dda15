"""`coophost render`: host_vars/<host>.yml for plain ansible-playbook runs."""

from __future__ import annotations

from pathlib import Path

import click

from coophost.cli.options import AppContext, name_option, pass_app


@click.command()
@name_option("host", "Only this host.", dest="host_name")
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False),
              help="Write host_vars/ here [default: the co-op directory].")
@pass_app
def render(app: AppContext, host_name: str | None, out_dir: Path | None) -> None:
    """Write each host's desired state as an Ansible vars file (host_vars/HOST.yml)."""
    from coophost.desired.hostvars import render_hosts
    from coophost.lock import coop_lock
    from coophost.registry.edit import assign_lives
    from coophost.registry.loader import load_registry

    with coop_lock(app.inventory, purpose="render"):
        loaded = load_registry(app.inventory)
        if assign_lives(app.inventory, loaded):
            loaded = load_registry(app.inventory, base=loaded.base)  # the files just written
        written = render_hosts(loaded, out_dir or app.inventory, host_name)
    for path in written:
        app.out.print(f"wrote {path}")


commands: list[click.Command] = [render]
