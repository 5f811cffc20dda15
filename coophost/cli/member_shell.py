"""`coophost member-shell SLUG`: the forced command of a member's SSH key (hidden)."""

from __future__ import annotations

import os

import click

from coophost.cli.options import AppContext, name_argument, pass_app


@click.command("member-shell", hidden=True)
@name_argument("member", "slug")
@pass_app
def member_shell(app: AppContext, slug: str) -> int:
    """The forced command of member keys: runs $SSH_ORIGINAL_COMMAND as a member verb."""
    from coophost.members.shell import run

    return run(app.inventory, slug, os.environ.get("SSH_ORIGINAL_COMMAND"))


commands: list[click.Command] = [member_shell]
