"""`coophost init`: a new co-op directory."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click

from coophost.cli import options
from coophost.cli.options import AppContext, escape, next_step, pass_app

QUESTIONS = (("--name", "the co-op's name"), ("--domain", "its primary domain"),
             ("--contact", "the sysadmins' contact address"))


def _checked(option: str) -> Callable[[str], str]:
    """A click value_proc: the answer checked as coop.yml's load checks it (asked again if not)."""
    from coophost.errors import CoophostError
    from coophost.registry.init import check_option

    def check(value: str) -> str:
        try:
            check_option(option, value)
        except CoophostError as exc:
            raise click.BadParameter(exc.message.removeprefix("(command line): ")) from exc
        return value

    return check


def ask_missing(given: dict[str, str | None], interactive: bool) -> dict[str, str]:
    """Each option's value: given, or asked for at a terminal; else exit 2 naming what lacks."""
    from coophost.errors import UsageError

    missing = [option for option, _ in QUESTIONS if not given.get(option)]
    if missing and not interactive:
        raise UsageError(f"missing {', '.join(missing)} (stdin is not a terminal to ask for "
                         f"{'it' if len(missing) == 1 else 'them'})",
                         hint="coophost init DIR --name NAME --domain DOMAIN --contact ADDRESS")
    answers = {option: value for option, value in given.items() if value}
    for option, question in QUESTIONS:
        if option not in answers:
            answers[option] = click.prompt(question.capitalize(), value_proc=_checked(option),
                                           err=True)
    return answers


@click.command()
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False))
@click.option("--name", help="The co-op's name [asked for at a terminal].")
@click.option("--domain", help="The co-op's primary domain [asked for at a terminal].")
@click.option("--contact", help="The sysadmins' contact address [asked for at a terminal].")
@pass_app
def init(app: AppContext, directory: Path, name: str | None, domain: str | None,
         contact: str | None) -> None:
    """Create a new co-op directory (coop.yml, hosts.yml, members/, secrets/, keys).

    Also makes the vault password file and the controller's SSH key (controller-key), which
    `coophost host enrol` installs on each new host. Options not given are asked for when
    stdin is a terminal (and checked as coop.yml is); otherwise their absence is exit 2.
    """
    from coophost.errors import UsageError
    from coophost.layout import COOP_FILE
    from coophost.registry.init import init_coop

    if (directory / COOP_FILE).exists():  # before asking anything
        raise UsageError(f"{directory} already holds a co-op ({COOP_FILE} exists)")
    answers = ask_missing({"--name": name, "--domain": domain, "--contact": contact},
                          options.stdin_is_terminal())
    created = init_coop(directory, name=answers["--name"], domain=answers["--domain"],
                        contact=answers["--contact"])
    for path in created:
        app.out.print(f"created {escape(str(path))}")
    next_step(app, f"coophost -i {directory} host enrol NAME --address ADDRESS "
                   "--fingerprint SHA256:... (read on the host's console)")


commands: list[click.Command] = [init]
