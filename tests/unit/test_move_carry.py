"""Moves that carry the data: the move record, the old host's relay, the copy's judgement."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import yaml

from coophost.desired.hostvars import host_files
from coophost.desired.units import compute
from coophost.errors import ConfigError, UsageError
from coophost.lock import coop_lock
from coophost.members.carry import CopyReport, check_copy, newest_archived, parse_sums
from coophost.members.lifecycle import expire_moves, move
from coophost.registry.loader import load_registry


class _Loader(yaml.SafeLoader):
    pass


_Loader.add_constructor("!unsafe", lambda loader, node: loader.construct_scalar(node))
_Loader.add_constructor("!vault", lambda loader, node: "vault")

MEMBER = "ada-books"  # mail on h2 in the lab co-op: ada@ and orders@ at ada-books.test


def _vars(coop: Path, host: str) -> dict:
    texts, _ = host_files(coop)
    return yaml.load(texts[host], Loader=_Loader)


def test_a_move_of_an_applied_unit_records_where_it_came_from(coop: Path, record_applied
                                                             ) -> None:
    record_applied(coop)
    before = compute(coop).host_hashes
    move(coop, MEMBER, "mail", "h1", "test", today=dt.date(2026, 12, 6))
    member = load_registry(coop, need_hosts=False).registry.members[MEMBER]
    assert member.placement["mail"] == "h1"
    assert member.moved == {"mail": {"from": "h2", "on": "2026-12-06"}}
    relayed = _vars(coop, "h2")["coophost_moved_away"]
    assert [(r["service"], r["to"]["name"], r["member"]["slug"]) for r in relayed] == [
        ("mail", "h1", MEMBER)]
    assert relayed[0]["to"]["address"] == "h1.lab.test"
    assert relayed[0]["settings"]["mailboxes"] == ["ada", "orders"]
    assert "secrets" not in relayed[0]  # the relay needs no password or key
    assert _vars(coop, "h1")["coophost_moved_away"] == []
    assert _vars(coop, "h3")["coophost_moved_away"] == []
    after = compute(coop).host_hashes
    assert after["h2"] != before["h2"]  # the old host's relay is a change to deploy there
    assert after["h3"] == before["h3"]


def test_a_move_of_a_unit_never_deployed_records_no_relay(coop: Path) -> None:
    move(coop, MEMBER, "mail", "h1", "test")
    member = load_registry(coop, need_hosts=False).registry.members[MEMBER]
    assert member.placement["mail"] == "h1" and member.moved == {}
    assert _vars(coop, "h2")["coophost_moved_away"] == []


def test_moving_back_relays_from_the_host_it_left_last(coop: Path, record_applied) -> None:
    record_applied(coop)
    move(coop, MEMBER, "mail", "h1", "test")
    record_applied(coop)
    move(coop, MEMBER, "mail", "h2", "test")
    member = load_registry(coop, need_hosts=False).registry.members[MEMBER]
    assert member.moved["mail"]["from"] == "h1"
    assert [r["to"]["name"] for r in _vars(coop, "h1")["coophost_moved_away"]] == ["h2"]
    assert _vars(coop, "h2")["coophost_moved_away"] == []


def test_moves_expire_after_relay_days(coop: Path, record_applied) -> None:
    record_applied(coop)
    move(coop, MEMBER, "mail", "h1", "test", today=dt.date(2026, 12, 1))
    assert expire_moves(coop, "test", dt.date(2026, 12, 7)) == []  # 6 days: kept
    assert expire_moves(coop, "test", dt.date(2026, 12, 8), dry_run=True) == [f"{MEMBER}/mail"]
    assert load_registry(coop, need_hosts=False).registry.members[MEMBER].moved
    assert expire_moves(coop, "test", dt.date(2026, 12, 8)) == [f"{MEMBER}/mail"]
    member = load_registry(coop, need_hosts=False).registry.members[MEMBER]
    assert member.moved == {} and "moved" not in Path(coop / "members" / f"{MEMBER}.yml"
                                                      ).read_text()
    assert _vars(coop, "h2")["coophost_moved_away"] == []


def test_disabling_a_moved_service_drops_its_move(coop: Path, record_applied) -> None:
    from coophost.registry.edit import disable_service

    record_applied(coop)
    move(coop, MEMBER, "mail", "h1", "test")
    with coop_lock(coop):
        disable_service(coop, load_registry(coop, need_hosts=False), MEMBER, "mail")
    assert load_registry(coop, need_hosts=False).registry.members[MEMBER].moved == {}


@pytest.mark.parametrize(("record", "field", "why"), [
    ("moved: {mail: {from: h2}}\n", "moved.mail.on", "must be a date"),
    ("moved: {mail: {from: h1, on: 2026-12-06}}\n", "moved.mail.from",
     "is where the service is placed now"),
    ("moved: {git: {from: h1, on: 2026-12-06}}\n", "moved.git", "not enabled"),
    ("moved: {mail: {from: 'h1; rm', on: 2026-12-06}}\n", "moved.mail.from", ""),
    ("moved: {mail: {from: h1, on: 2026-12-06, to: h3}}\n", "moved.mail", "to"),
])
def test_a_bad_move_record_is_refused_naming_the_field(coop: Path, record: str, field: str,
                                                       why: str) -> None:
    path = coop / "members" / f"{MEMBER}.yml"
    path.write_text(path.read_text().replace("placement:\n  mail: h2", "placement:\n  mail: h1")
                    + record)
    with pytest.raises(ConfigError) as caught:
        load_registry(coop, need_hosts=False)
    assert f"members/{MEMBER}.yml" in str(caught.value) and field in str(caught.value)
    assert why in str(caught.value)


def test_newest_archived_picks_the_latest_copy_of_that_owner_only() -> None:
    names = ["ada.1b194ba15879.20261201T100000Z", "ada.1b194ba15879.20261205T090000Z",
             "ada.1b194ba15879.20261205T090000Z-1", "ada.ffffffffffff.20261206T000000Z",
             "legacy-ada-books.test.20261207T000000Z", "junk"]
    assert newest_archived(names, "ada.1b194ba15879") == "ada.1b194ba15879.20261205T090000Z-1"
    assert newest_archived(names, "bob.000000000000") is None


def test_parse_sums_reads_escaped_names() -> None:
    digest = "a" * 64
    text = (f"{digest}  /var/mail/units/o/ada/cur/1:2,S\n"
            f"\\{digest}  /var/mail/units/o/we\\\\ird\\nname\n")
    assert parse_sums(text, "/var/mail/units/o") == {"ada/cur/1:2,S": digest,
                                                      "we\\ird\nname": digest}
    with pytest.raises(ValueError, match="unexpected"):
        parse_sums(f"{digest}  /elsewhere/x\n", "/var/mail/units/o")


def test_check_copy_fails_on_a_missing_or_changed_file_and_keeps_what_was_there() -> None:
    a, b, c = "a" * 64, "b" * 64, "c" * 64
    source = {"cur/1": a, "cur/2": b, "dovecot-uidlist": c}
    report = CopyReport("/p")
    check_copy(source, {"dovecot-uidlist": a}, {"cur/1": a, "cur/2": b, "dovecot-uidlist": a},
               report)
    assert (report.files, report.kept, report.problems) == (2, 1, [])
    broken = CopyReport("/p")
    check_copy(source, {}, {"cur/1": a, "cur/2": c}, broken)
    assert broken.problems == ["1 file(s) missing on the new host, e.g. dovecot-uidlist",
                               "1 file(s) differ on the new host, e.g. cur/2"]


def test_evacuation_re_places_only_the_units_of_the_gone_host(coop: Path) -> None:
    from coophost.registry.placement import evacuation

    loaded = load_registry(coop)
    registry = loaded.registry
    on_h2 = {(slug, service) for slug, m in registry.members.items()
             for service, host in m.placement.items() if host == "h2"}
    plan = evacuation(registry, loaded.catalogue, "h2")
    assert set(plan) == on_h2 and (MEMBER, "mail") in plan
    assert all(host in ("h1", "h3") for host in plan.values())


def test_evacuation_without_room_elsewhere_is_refused(coop: Path) -> None:
    from coophost.registry.placement import NoHostFits, evacuation

    hosts = coop / "hosts.yml"
    text = hosts.read_text()
    assert "ram_mb: 4096" in text
    hosts.write_text(text.replace("ram_mb: 4096", "ram_mb: 1"))
    loaded = load_registry(coop)
    with pytest.raises(NoHostFits):
        evacuation(loaded.registry, loaded.catalogue, "h2")
    with pytest.raises(Exception, match="no host 'h9'"):
        evacuation(loaded.registry, loaded.catalogue, "h9")


@pytest.mark.usefixtures("mail_with_a_database")
def test_a_unit_with_databases_is_not_moved_and_nothing_is_recorded(coop: Path, record_applied
                                                                    ) -> None:
    # A move carries files only (members.carry): a unit whose catalogue entry names databases
    # would leave them behind, so the move is refused (mail given a database by the fixture).
    record_applied(coop)
    before = (coop / "members" / f"{MEMBER}.yml").read_bytes()
    with pytest.raises(UsageError, match="has databases on h2, and a move carries files only"):
        move(coop, MEMBER, "mail", "h1", "test", today=dt.date(2026, 12, 6))
    assert (coop / "members" / f"{MEMBER}.yml").read_bytes() == before
