"""`plan` and `deploy` filters naming something that does not exist: exit 2, did you mean."""

from __future__ import annotations

from pathlib import Path

import pytest

CASES = [
    (["--member", "nobody"], "no member 'nobody'", "`coophost member list` shows them"),
    (["--member", "ada-book"], "no member 'ada-book'", "did you mean 'ada-books'?"),
    (["--service", "mali"], "no service 'mali'", "did you mean 'mail'?"),
    (["--host", "hh1"], "no host 'hh1' in hosts.yml", "did you mean 'h1'?"),
]


@pytest.mark.parametrize(("args", "message", "hint"), CASES, ids=[c[1] for c in CASES])
def test_deploy_refuses_unknown_names(coop: Path, cli, args: list[str], message: str,
                                      hint: str) -> None:
    before = {p.name: p.read_bytes() for p in (coop / "members").iterdir()}
    code, out, err = cli("-i", str(coop), "deploy", *args)
    assert code == 2, out + err
    assert message in err
    assert hint in err
    assert {p.name: p.read_bytes() for p in (coop / "members").iterdir()} == before


@pytest.mark.parametrize(("args", "message", "hint"),
                         [c for c in CASES if c[0][0] != "--service"],
                         ids=[c[1] for c in CASES if c[0][0] != "--service"])
def test_plan_refuses_unknown_names(coop: Path, cli, args: list[str], message: str,
                                    hint: str) -> None:
    code, out, err = cli("-i", str(coop), "plan", *args)
    assert code == 2, out + err
    assert message in err
    assert hint in err
