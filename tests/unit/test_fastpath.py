"""The deploy's fast path: which host jobs may run only the units playbook. Pure parts."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from coophost.deploy.jobs import FAST, FULL, Selection, choose_path, plan_jobs
from coophost.desired.plan import ADD, CHANGE, REMOVE, Change
from coophost.desired.units import compute, fast_capable
from coophost.registry.catalogue import load_catalogue
from coophost.state import MIGRATIONS, StateDB, migrate


def change(action: str, member: str = "ada", service: str = "mail") -> Change:
    return Change("h1", member, service, action, None if action == REMOVE else "new",
                  None if action == ADD else "old")


@pytest.mark.parametrize(("status", "changes", "applied", "selection", "expected"), [
    ("changed", [change(CHANGE)], "L", Selection(), (FAST, ["mail"])),
    ("changed", [change(ADD, "bob")], "L", Selection(), (FAST, ["mail"])),
    ("changed", [change(CHANGE), change(CHANGE, "bob", "git")], "L", Selection(),
     (FAST, ["git", "mail"])),
    ("changed", [change(CHANGE)], "L", Selection(full=True), (FULL, "--full")),
    ("changed", [change(CHANGE)], "L", Selection(everything=True), (FULL, "--all")),
    ("changed", [change(CHANGE)], "L", Selection(resume=True), (FULL, "--resume")),
    ("new", [change(ADD)], None, Selection(), (FULL, "host new")),
    ("changed", [change(CHANGE)], None, Selection(), (FULL, "no host-level hash recorded yet")),
    ("changed", [change(CHANGE)], "OLD", Selection(), (FULL, "host-level change")),
    ("changed", [], "L", Selection(), (FULL, "no unit change")),
    ("changed", [change(CHANGE), change(REMOVE, "bob")], "L", Selection(),
     (FULL, "unit removed: bob/mail")),
    ("changed", [change(CHANGE, service="nextcloud")], "L", Selection(),
     (FULL, "no per-unit tasks: nextcloud")),
])
def test_choose_path(status: str, changes: list[Change], applied: str | None,
                     selection: Selection, expected: tuple[str, object]) -> None:
    path, why, services = choose_path(status, changes, "L", applied, {"mail", "git"}, selection)
    assert path == expected[0]
    if path == FAST:
        assert services == expected[1]
        assert why.startswith("only units changed")
    else:
        assert (why, services) == (expected[1], [])


def test_the_available_services_have_per_unit_tasks_and_the_coming_services_not() -> None:
    assert fast_capable(load_catalogue()) == {"mail", "git", "nextcloud"}


def add_mailbox(coop: Path, member: str, mailbox: str) -> None:
    path = coop / "members" / f"{member}.yml"
    text = path.read_text()
    assert "mailboxes: [ada, orders]" in text
    path.write_text(text.replace("mailboxes: [ada, orders]",
                                 f"mailboxes: [ada, orders, {mailbox}]"))


def test_a_new_mailbox_changes_the_host_hash_but_not_its_host_level(coop: Path) -> None:
    before = compute(coop)
    add_mailbox(coop, "ada-books", "shop")
    after = compute(coop)
    host = after.units[("ada-books", "mail")].host
    assert after.host_hashes[host] != before.host_hashes[host]
    assert after.host_levels == before.host_levels


def test_a_host_var_changes_the_host_level(coop: Path) -> None:
    before = compute(coop)
    hosts = coop / "hosts.yml"
    hosts.write_text(hosts.read_text().replace("coophost_fqdn: h2.lab.test,",
                                               "coophost_fqdn: h2.lab.test, ntp_server: x,"))
    after = compute(coop)
    assert after.host_levels["h2"] != before.host_levels["h2"]
    assert after.host_levels["h1"] == before.host_levels["h1"]


def test_a_new_mail_domain_stays_below_the_host_level(coop: Path) -> None:
    """Mail's per-unit tasks write the domain tables and the DKIM signing map: no full play."""
    before = compute(coop)
    path = coop / "members" / "ada-books.yml"
    path.write_text(path.read_text().replace("  - ada-books.test\n",
                                             "  - ada-books.test\n  - ada-shop.test\n"))
    after = compute(coop)
    host = after.units[("ada-books", "mail")].host
    assert after.host_hashes[host] != before.host_hashes[host]
    assert after.host_levels[host] == before.host_levels[host]


def test_a_new_member_changes_the_host_level(coop: Path) -> None:
    """A new unit is a new backup job (roles/backup): host-level, the full play."""
    before = compute(coop)
    text = (coop / "members" / "ada-books.yml").read_text()
    (coop / "members" / "ada-two.yml").write_text(
        text.replace("ada-books", "ada-two").replace("id: 1b194ba15879\n", "")
        .replace("ada@ada-two.test", "ada@ada-two.test"))
    after = compute(coop)
    host = after.units[("ada-two", "mail")].host
    assert after.host_levels[host] != before.host_levels[host]


def test_plan_jobs_takes_the_fast_path_for_a_new_mailbox_only(
        coop: Path, record_applied: Callable[[Path], None]) -> None:
    record_applied(coop)
    add_mailbox(coop, "ada-books", "shop")
    desired = compute(coop)
    with StateDB(coop) as db:
        applied = db.applied()
    host = desired.units[("ada-books", "mail")].host
    jobs = plan_jobs(desired, applied, Selection(), (), {"mail", "git"}).jobs
    assert list(jobs) == [host]
    assert (jobs[host].path, jobs[host].fast_services) == (FAST, ["mail"])
    assert jobs[host].level == desired.host_levels[host]
    forced = plan_jobs(desired, applied, Selection(full=True), (), {"mail", "git"}).jobs
    assert forced[host].path == FULL
    everything = plan_jobs(desired, applied, Selection(everything=True), (),
                           {"mail", "git"}).jobs
    assert {j.path for j in everything.values()} == {FULL}


def test_a_member_gone_from_a_host_takes_the_full_play(
        coop: Path, record_applied: Callable[[Path], None]) -> None:
    record_applied(coop)
    desired = compute(coop)
    host = desired.units[("ada-books", "mail")].host
    (coop / "members" / "ada-books.yml").unlink()
    desired = compute(coop)
    with StateDB(coop) as db:
        jobs = plan_jobs(desired, db.applied(), Selection(), (), {"mail", "git"}).jobs
    assert jobs[host].path == FULL
    assert jobs[host].why in ("host-level change", "unit removed: ada-books/mail")


def test_a_state_db_from_before_records_no_level_and_takes_the_full_play(
        coop: Path, tmp_path: Path) -> None:
    """Migration 7 on a state.db at version 6: its hosts keep their hash and get no level."""
    from coophost.layout import STATE_DIR, STATE_FILE

    (coop / STATE_DIR).mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(coop / STATE_DIR / STATE_FILE, isolation_level=None)
    migrate(conn, MIGRATIONS[:6])
    conn.execute("INSERT INTO applied_host (host, hash, run_id, applied_at) "
                 "VALUES ('h1', 'abc', 1, 0)")
    conn.close()
    with StateDB(coop) as db:
        applied = db.applied()
        assert (applied.hosts, applied.levels) == ({"h1": "abc"}, {"h1": None})
        db.record_host_applied("h1", "def", [], level="L")
        assert db.applied().levels == {"h1": "L"}
    path, why, _ = choose_path("changed", [change(CHANGE)], "L", None, {"mail"}, Selection())
    assert (path, why) == (FULL, "no host-level hash recorded yet")


@pytest.mark.parametrize("service", ["mail", "git"])
def test_the_full_role_runs_the_same_per_unit_tasks_as_the_fast_path(service: str) -> None:
    """tasks/main.yml imports units.yml and ready.yml; no task of theirs is written twice."""
    import yaml

    tasks = Path(__file__).resolve().parents[2] / "services" / service / "tasks"
    main = yaml.safe_load((tasks / "main.yml").read_text())
    imported = [t["ansible.builtin.import_tasks"] for t in main
                if "ansible.builtin.import_tasks" in t]
    assert imported[-2:] == ["units.yml", "ready.yml"]

    def names(file: str) -> list[str]:
        found = []
        for task in yaml.safe_load((tasks / file).read_text()):
            if "ansible.builtin.import_tasks" in task:
                found += names(task["ansible.builtin.import_tasks"])
            else:
                found.append(task["name"])
        return found

    unit_side = names("units.yml") + names("ready.yml")
    host_side = [n for f in imported[:-2] for n in names(f)] + [
        t["name"] for t in main if "ansible.builtin.import_tasks" not in t]
    assert unit_side
    assert not set(unit_side) & set(host_side)


def test_plan_shows_the_path_each_host_takes(coop: Path, cli,
                                             record_applied: Callable[[Path], None]) -> None:
    import json

    code, out, _ = cli("-i", str(coop), "plan")
    assert code == 1 and "deploy takes the full path: host new" in out
    record_applied(coop)
    add_mailbox(coop, "ada-books", "shop")
    code, out, _ = cli("-i", str(coop), "plan")
    assert code == 1 and "deploy takes the fast path: only units changed: mail" in out
    code, out, _ = cli("-i", str(coop), "plan", "--json", "--member", "ada-books")
    paths = json.loads(out)["paths"]
    assert [p["path"] for p in paths.values()] == ["fast"]


def test_a_role_readme_is_not_part_of_its_version(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Prose in a role's folder does not change its version (no redeploy for a doc edit);
    a task file does."""
    import shutil

    from coophost.desired import units

    role = tmp_path / "mail"
    shutil.copytree(units.role_dir("mail"), role)
    monkeypatch.setattr(units, "role_dir", lambda name: role)
    version = units.role_version.__wrapped__  # the cached one keeps the real folder's
    before = version("mail")
    (role / "README.md").write_text("edited prose\n")
    assert version("mail") == before
    (role / "tasks" / "main.yml").write_text((role / "tasks" / "main.yml").read_text() + "\n")
    assert version("mail") != before
