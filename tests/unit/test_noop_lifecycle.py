"""A suspend, resume or move that changes nothing says so, and writes nothing (no audit line)."""

from __future__ import annotations

from pathlib import Path

from coophost.members.audit import read_audit


def snapshot(coop: Path) -> tuple[dict[str, bytes], list[dict]]:
    return ({p.name: p.read_bytes() for p in (coop / "members").iterdir()}, read_audit(coop))


def test_suspending_a_suspended_member(coop: Path, cli) -> None:
    code, out, err = cli("-i", str(coop), "member", "suspend", "ada-books")
    assert code == 0, err
    assert [e["action"] for e in read_audit(coop)] == ["member suspended"]
    before = snapshot(coop)
    code, out, err = cli("-i", str(coop), "member", "suspend", "ada-books", "--why", "again")
    assert code == 0, err
    assert "ada-books is suspended already: nothing changed" in out
    assert snapshot(coop) == before


def test_resuming_an_active_member(coop: Path, cli) -> None:
    before = snapshot(coop)
    code, out, err = cli("-i", str(coop), "member", "resume", "ada-books")
    assert code == 0, err
    assert "ada-books is active already: nothing changed" in out
    assert snapshot(coop) == before


def test_moving_a_unit_to_where_it_is(coop: Path, cli) -> None:
    before = snapshot(coop)
    code, out, err = cli("-i", str(coop), "member", "move", "ada-books", "mail", "h2")
    assert code == 0, err
    assert "ada-books/mail is on h2 already: nothing changed" in out
    assert snapshot(coop) == before


def test_a_real_move_is_audited(coop: Path, cli) -> None:
    code, out, err = cli("-i", str(coop), "member", "move", "ada-books", "mail", "h1",
                         "--record-only")
    assert code == 0, err
    assert "ada-books/mail placed on h1" in out
    entries = read_audit(coop)
    assert [(e["action"], e["from"], e["to"]) for e in entries] == [("member moved", "h2", "h1")]
