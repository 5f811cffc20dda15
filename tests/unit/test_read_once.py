"""Each command reads the co-op once: coop.yml, hosts.yml and every member file at most once."""

from __future__ import annotations

import contextlib
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from coophost.deploy.executor import HostOutcome


@contextlib.contextmanager
def counting(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter[str]]:
    """Count the parses of co-op files by file: `coop.yml`, `hosts.yml` (its hosts or its
    workers), `members/x.yml`."""
    import coophost.registry.parse as parse

    counts: Counter[str] = Counter()
    # A module first imported while counting keeps a counter of its own past the test:
    # `original` finds the function behind one.
    originals = [original(f) for f in (parse.parse_coop, parse.parse_hosts, parse.parse_member,
                                       parse.parse_inventory, parse.parse_workers)]

    def wrap(function: Callable[..., Any]) -> Callable[..., Any]:
        def counted(data: object, file: str, *args: Any, **kwargs: Any) -> Any:
            counts[file] += 1
            return function(data, file, *args, **kwargs)
        counted.counts_calls_of = function  # type: ignore[attr-defined]
        return counted

    wrapped = {id(f): wrap(f) for f in originals}
    for module in list(sys.modules.values()):
        if not getattr(module, "__name__", "").startswith("coophost"):
            continue
        for attr, value in list(vars(module).items()):
            if callable(value) and id(original(value)) in wrapped:
                monkeypatch.setattr(module, attr, wrapped[id(original(value))])
    yield counts


def original(function: Any) -> Any:
    """The function a counter wraps, or `function` itself."""
    return getattr(function, "counts_calls_of", function)


class NoHosts:
    """An executor that runs nothing and reports every host ok."""

    def run_hosts(self, hosts: list[str], sink: Any, cancel: threading.Event,
                  done: Any = None) -> dict[str, HostOutcome]:
        return {h: HostOutcome(h, "ok", {"ok": 1}) for h in hosts}


def run_deploy(root: Path, check: bool) -> int:
    from coophost.deploy.engine import DeployOptions, deploy
    from coophost.deploy.progress import SilentProgress

    result = deploy(root, DeployOptions(check=check), SilentProgress(), threading.Event(),
                    executor_factory=lambda _vault: NoHosts())
    return result.exit_code


def commands(root: Path, cli: Callable[..., tuple[int, str, str]]) -> dict[str, Callable[[], Any]]:
    def export() -> None:
        import io

        from coophost.members import export as exporting

        with contextlib.suppress(RuntimeError):
            exporting.export_member(root, "ada-books", io.BytesIO())

    return {
        "plan": lambda: cli("-i", str(root), "plan"),
        "render": lambda: cli("-i", str(root), "render"),
        "deploy --check": lambda: run_deploy(root, check=True),
        "deploy": lambda: run_deploy(root, check=False),
        "member export": export,
        "dns records": lambda: cli("-i", str(root), "dns", "records"),
    }


def refuse_ssh(monkeypatch: pytest.MonkeyPatch) -> None:
    import coophost.ssh

    def connect(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("no SSH in unit tests")
    monkeypatch.setattr(coophost.ssh, "connect", connect)


@pytest.mark.parametrize("warm", [False, True], ids=["cold", "warm"])
def test_each_command_parses_each_file_at_most_once(
        coop: Path, cli: Any, monkeypatch: pytest.MonkeyPatch, warm: bool) -> None:
    refuse_ssh(monkeypatch)
    for name, command in commands(coop, cli).items():
        if warm:
            command()  # caches filled (a warm deploy has nothing left to do: still counted)
        else:
            import shutil

            shutil.rmtree(coop / ".coophost" / "cache", ignore_errors=True)
        with counting(monkeypatch) as counts:
            command()
        twice = {file: n for file, n in counts.items() if n > 1}
        assert not twice, f"{name} ({'warm' if warm else 'cold'}): {dict(counts)}"


def test_one_parse_of_hosts_yml_gives_the_connection_facts(coop: Path) -> None:
    from coophost.registry.hosts import load_hosts
    (coop / "hosts.yml").write_text(
        "all:\n  vars: {ansible_user: root, ansible_become: true}\n"
        "  hosts:\n    h1: {ansible_host: 10.0.0.1, coophost_capacity: {ram_mb: 1, disk_gb: 1},"
        " ansible_ssh_private_key_file: '{{ inventory_dir }}/keys/id'}\n"
        "  children:\n    mail:\n      vars: {ansible_user: admin, ansible_port: 2222}\n"
        "      hosts: {h1: {}}\n")
    from coophost.registry.loader import load_hosts as read_hosts

    host = read_hosts(coop)["h1"]
    assert host.connection is not None
    entry = host.connection
    assert (entry.address, entry.port, entry.user) == ("10.0.0.1", 2222, "admin")
    assert entry.key_file == f"{coop.resolve()}/keys/id"
    assert entry.groups == ("mail",) and entry.vars["ansible_become"] is True
    assert load_hosts(coop) == [entry]


def test_deciding_writes_nothing_and_check_mode_records_no_placement(coop: Path) -> None:
    from coophost.deploy.jobs import Selection, plan_jobs
    from coophost.desired.units import compute
    from coophost.registry.loader import load_registry
    from coophost.state import Applied

    for file in (coop / "members").glob("*.yml"):  # no placement recorded yet
        text = file.read_text()
        file.write_text(text[:text.index("placement:")] + "placement: {}\n"
                        if "placement:" in text else text)
    before = {f.name: f.read_bytes() for f in (coop / "members").glob("*.yml")}
    loaded = load_registry(coop)
    assert all(m.life for m in loaded.registry.members.values())
    decision = plan_jobs(compute(loaded), Applied(), Selection())
    assert decision.placements and decision.jobs
    assert {f.name: f.read_bytes() for f in (coop / "members").glob("*.yml")} == before
    run_deploy(coop, check=True)
    assert {f.name: f.read_bytes() for f in (coop / "members").glob("*.yml")} == before
    run_deploy(coop, check=False)
    placed = load_registry(coop).registry.members
    assert {(m, s): placed[m].placement[s] for m, s in decision.placements} \
        == decision.placements
