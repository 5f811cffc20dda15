"""Placement: capacity, stickiness, determinism and a clear error when no host fits."""

from __future__ import annotations

import pytest

from coophost.registry.placement import Demand, NoHostFits, place

CAP = {"h1": {"ram_mb": 1000, "disk_gb": 10}, "h2": {"ram_mb": 1000, "disk_gb": 10},
       "h3": {"ram_mb": 100, "disk_gb": 100}}
GROUPS = {"mail": ["h1", "h2"], "git": ["h1", "h2", "h3"]}


def unit(member: str, ram: int = 100, disk: int = 1, recorded: str | None = None,
         service: str = "mail") -> Demand:
    return Demand(member, service, "mail" if service == "mail" else "git",
                  {"ram_mb": ram, "disk_gb": disk}, recorded)


CASES = [
    ("spreads new units over the group", [unit("a"), unit("b")],
     {("a", "mail"): "h1", ("b", "mail"): "h2"}),
    ("recorded units stay (sticky)", [unit("a", recorded="h2"), unit("b", recorded="h2")],
     {("a", "mail"): "h2", ("b", "mail"): "h2"}),
    ("recorded units count against capacity", [unit("a", ram=900, recorded="h1"), unit("b")],
     {("a", "mail"): "h1", ("b", "mail"): "h2"}),
    ("only hosts of the service's group", [unit("a", service="git", ram=50, disk=50)],
     {("a", "git"): "h3"}),
    ("a unit too big for the emptiest host goes where it fits",
     [unit("a", ram=500, recorded="h1"), unit("b", ram=200, recorded="h2"),
      unit("c", ram=700)], {("a", "mail"): "h1", ("b", "mail"): "h2", ("c", "mail"): "h2"}),
    ("sticky even when the host is now over capacity",
     [unit("a", ram=5000, recorded="h1")], {("a", "mail"): "h1"}),
]


@pytest.mark.parametrize(("why", "demands", "expected"), CASES, ids=[c[0] for c in CASES])
def test_place(why: str, demands: list[Demand], expected: dict) -> None:
    assert place(demands, CAP, GROUPS).hosts == expected


def test_new_units_are_reported() -> None:
    result = place([unit("a", recorded="h1"), unit("b")], CAP, GROUPS)
    assert result.new == {("b", "mail")}


def test_deterministic_whatever_the_input_order() -> None:
    demands = [unit(f"m{i:02d}", ram=10 * (i % 7 + 1), disk=0) for i in range(40)]
    first = place(demands, CAP, GROUPS).hosts
    assert place(list(reversed(demands)), CAP, GROUPS).hosts == first


def test_no_host_fits_names_member_service_and_free_room() -> None:
    with pytest.raises(NoHostFits) as caught:
        place([unit("a", ram=2000)], CAP, GROUPS)
    message = str(caught.value)
    assert "members/a.yml: services.mail" in message
    assert "h1: 1000 MB/10 GB free" in message
    assert caught.value.exit_code == 2


def test_no_host_in_group() -> None:
    with pytest.raises(NoHostFits, match="no host is in the 'mail' group"):
        place([unit("a")], CAP, {})


def test_overcommitted_hosts_are_listed() -> None:
    result = place([unit("a", ram=5000, recorded="h1")], CAP, GROUPS)
    assert result.overcommitted(CAP) == ["h1"]
