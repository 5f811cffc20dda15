"""`python -m coophost`: the same as the `coophost` command."""

from coophost.cli.main import run

run()
