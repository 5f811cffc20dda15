"""Health checks and notifications: pure logic (facts -> checks -> mails), the probe script
run for real on this machine, and the CLI's errors and timer units."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from email import message_from_bytes
from pathlib import Path

import pytest

from coophost.health.checks import (
    HostPlan,
    Thresholds,
    backup_checks,
    deploy_checks,
    expected,
    for_member,
    host_checks,
)
from coophost.health.notify import (
    ATTENTION,
    OK,
    changes,
    contact_mail,
    message,
    request_mails,
)
from coophost.health.probe import PROBE, HostFacts
from coophost.registry.catalogue import Port

NOW = 1_800_000_000.0


@dataclass
class FakeHost:
    groups: tuple[str, ...]


@dataclass
class FakeService:
    name: str
    group: str
    systemd: tuple[str, ...]
    ports: tuple[Port, ...] = ()
    status: str = "available"


@dataclass
class FakeRequest:
    id: int
    member: str
    service: str
    why: str = ""
    history: list[dict[str, str]] = field(default_factory=list)


SERVICES = {
    "mail": FakeService("mail", "mail", ("postfix.service", "dovecot.service"),
                        (Port(993, "tcp", "IMAP over TLS"), Port(25, "tcp", "SMTP"))),
    "git": FakeService("git", "git", ("nginx.service",), (Port(443, "tcp", "HTTPS"),)),
}


def plans() -> dict[str, HostPlan]:
    hosts = {"h1": FakeHost(("mail", "git")), "h2": FakeHost(("mail",)),
             "b1": FakeHost(("backup",))}
    placed = [("ada", "mail", "h1"), ("bread", "git", "h1"), ("dune", "mail", "h2")]
    return expected(hosts, SERVICES, placed, ["b1"])


def facts(**changes: object) -> HostFacts:
    base: dict[str, object] = {
        "units": {u: {"load": "loaded", "active": "active", "sub": "running"} for u in (
            "ssh.service", "nginx.service", "postfix.service", "dovecot.service",
            "coophost-backup.timer")},
        "failed_units": [], "listening": [22, 25, 80, 443, 993],
        "certificates": {"h1.lab.test": NOW + 60 * 86400, "git.bread.test": NOW + 80 * 86400},
        "mail_queue": {"total": 3, "deferred": 1},
        "disk": {"total": 100 * 2**30, "free": 40 * 2**30},
        "memory": {"total": 4 * 2**30, "available": 2 * 2**30},
    }
    base.update(changes)
    return HostFacts("h1", reachable=True, facts=base)


def check(found: HostFacts, limits: Thresholds | None = None):
    return {c.key: c for c in host_checks(found, plans()["h1"], limits or Thresholds(),
                                          {"bread.test": "bread", "ada.test": "ada"}, NOW)}


def test_expected_units_come_from_the_catalogue_and_the_hosts_roles() -> None:
    found = plans()
    assert found["h1"].units == ["ssh.service", "nginx.service", "postfix.service",
                                 "dovecot.service", "coophost-backup.timer"]
    assert found["h2"].units == ["ssh.service", "nginx.service", "postfix.service",
                                 "dovecot.service", "coophost-backup.timer"]
    assert found["b1"].units == ["ssh.service", "coophost-borg-sshd.service"]
    assert found["h1"].ports == {993: "mail: IMAP over TLS", 25: "mail: SMTP", 443: "git: HTTPS"}
    assert found["h1"].unit_members["dovecot.service"] == ("ada",)
    assert found["h1"].unit_members["ssh.service"] == ("ada", "bread")


def test_a_healthy_host_passes_every_check() -> None:
    found = check(facts())
    assert all(c.ok for c in found.values()), [c.detail for c in found.values() if not c.ok]
    assert {"h1/reachable", "h1/unit/dovecot.service", "h1/port/993", "h1/cert/h1.lab.test",
            "h1/mail-queue", "h1/disk", "h1/memory"} <= set(found)


def test_a_stopped_service_and_its_closed_port_need_attention_and_say_what_to_do() -> None:
    units = facts().facts["units"]
    units["dovecot.service"] = {"load": "loaded", "active": "inactive", "sub": "dead"}
    found = check(facts(units=units, listening=[22, 25, 80, 443]))
    bad = {k: c for k, c in found.items() if not c.ok}
    assert set(bad) == {"h1/unit/dovecot.service", "h1/port/993"}
    assert bad["h1/unit/dovecot.service"].detail == "dovecot.service is inactive (dead)"
    assert "systemctl status dovecot.service" in bad["h1/unit/dovecot.service"].advice
    assert bad["h1/unit/dovecot.service"].members == ("ada",)


def test_a_certificate_within_the_limit_is_flagged_and_an_expired_one_says_so() -> None:
    soon = facts(certificates={"h1.lab.test": NOW + 5 * 86400, "git.bread.test": NOW - 86400})
    found = check(soon)
    assert not found["h1/cert/h1.lab.test"].ok
    assert "expires in 5 days" in found["h1/cert/h1.lab.test"].detail
    assert "expired on" in found["h1/cert/git.bread.test"].detail
    assert found["h1/cert/git.bread.test"].members == ("bread",)
    assert check(soon, Thresholds(cert_days=3))["h1/cert/h1.lab.test"].ok


def test_queue_disk_memory_and_unknown_failed_units_have_limits() -> None:
    found = check(facts(mail_queue={"total": 150, "deferred": 140},
                        disk={"total": 100, "free": 5}, memory={"total": 100, "available": 2},
                        failed_units=["coophost-backup.service"]))
    queue = found["h1/mail-queue"]
    assert not queue.ok and "150 message(s) queued" in queue.detail
    assert not found["h1/disk"].ok and not found["h1/memory"].ok
    assert not found["h1/unit/coophost-backup.service"].ok


def test_an_unreachable_host_is_one_finding() -> None:
    found = host_checks(HostFacts("h1", error="h1: connection refused"), plans()["h1"],
                        Thresholds(), {}, NOW)
    assert [(c.key, c.ok, c.detail) for c in found] == [
        ("h1/reachable", False, "h1: connection refused")]


def test_deploy_checks_name_the_failed_run() -> None:
    found = deploy_checks({"h1": {"run_id": 7, "status": "failed", "finished_at": NOW,
                                  "summary": "mail : Render postfix failed\nmore"},
                           "h2": {"run_id": 6, "status": "ok", "finished_at": NOW,
                                  "summary": ""}}, ["h1", "h2", "h3"])
    by = {c.host: c for c in found}
    assert not by["h1"].ok and "run 7" in by["h1"].detail and "Render postfix" in by["h1"].detail
    assert "coophost runs show 7" in by["h1"].advice
    assert by["h2"].ok and not by["h3"].ok and by["h3"].detail == "never deployed"
    # a failed job's summary may name any member's unit: no member is shown these checks
    assert all(c.members == () for c in found)


def test_backup_checks_flag_missing_old_and_undrilled_units() -> None:
    rows = [
        {"member": "ada", "service": "mail", "host": "h1", "age_hours": 2.0, "fresh": True,
         "last": "a1", "error": "", "drill": {"at": NOW - 86400, "ok": True, "detail": ""}},
        {"member": "bread", "service": "git", "host": "h1", "age_hours": 40.0, "fresh": False,
         "last": "b1", "error": "", "drill": {"at": NOW - 30 * 86400, "ok": True, "detail": ""}},
        {"member": "dune", "service": "mail", "host": "h2", "age_hours": None, "fresh": False,
         "last": None, "error": "", "drill": None},
    ]
    found = {c.key: c for c in backup_checks(rows, Thresholds(), 26, NOW)}
    assert found["backup/ada/mail"].ok and found["drill/ada/mail"].ok
    assert not found["backup/bread/git"].ok and "over the 26 h limit" in found[
        "backup/bread/git"].detail
    assert not found["drill/bread/git"].ok and "over the 8 days limit" in found[
        "drill/bread/git"].detail
    assert found["backup/dune/mail"].detail == "dune mail has no backup yet"
    assert for_member(found.values(), "ada") == [found["backup/ada/mail"],
                                                  found["drill/ada/mail"]]


def test_a_change_of_state_is_mailed_once_and_its_recovery_once() -> None:
    units = facts().facts["units"]
    units["dovecot.service"] = {"load": "loaded", "active": "failed", "sub": "failed"}
    down = list(check(facts(units=units)).values())
    first = changes(down, {})
    assert [c.key for c in first.problems] == ["h1/unit/dovecot.service"]
    assert first.recovered == [] and "h1/disk" in first.quiet
    mail = contact_mail("Lab Co-op", ["admin@coop.test"], first)
    assert mail is not None and mail.keys == {"h1/unit/dovecot.service": ATTENTION}
    assert "dovecot.service is failed" in mail.subject and "what to do:" in mail.body
    mailed = first.quiet | mail.keys
    again = changes(down, mailed)
    assert not again.problems and not again.recovered and not again.quiet
    assert contact_mail("Lab Co-op", ["admin@coop.test"], again) is None
    back = changes(list(check(facts()).values()), mailed)
    assert [c.key for c in back.recovered] == ["h1/unit/dovecot.service"] and not back.problems
    recovery = contact_mail("Lab Co-op", ["admin@coop.test"], back)
    assert recovery is not None and "1 recovered" in recovery.subject
    assert recovery.keys == {"h1/unit/dovecot.service": OK}


def test_request_mails_go_to_the_member_once_per_state_and_old_news_is_quiet() -> None:
    recent = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(NOW - 600))
    old = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(NOW - 10 * 86400))
    requests = [FakeRequest(1, "ada", "git", history=[{"at": recent}]),
                FakeRequest(2, "bread", "mail", why="over the allowance",
                            history=[{"at": recent}]),
                FakeRequest(3, "dune", "git", history=[{"at": old}]),
                FakeRequest(4, "ada", "mail", history=[{"at": recent}])]
    shown = {1: "approved", 2: "denied", 3: "deployed", 4: "pending"}
    contacts = {"ada": "ada@ada.test", "bread": "office@bread.test", "dune": "ed@dune.test"}
    mails, quiet = request_mails(requests, shown, contacts, {}, "Lab Co-op", NOW)
    assert [(m.to, m.keys) for m in mails] == [
        (("ada@ada.test",), {"request/1": "approved"}),
        (("office@bread.test",), {"request/2": "denied"})]
    assert "over the allowance" in mails[1].body and quiet == {"request/3": "deployed"}
    mailed = {"request/1": "approved", "request/2": "denied", "request/3": "deployed"}
    shown[1] = "deployed"
    mails, quiet = request_mails(requests, shown, contacts, mailed, "Lab Co-op", NOW)
    assert [(m.to, m.keys) for m in mails] == [(("ada@ada.test",), {"request/1": "deployed"})]
    assert "is live" in mails[0].body and quiet == {}
    mailed["request/1"] = "deployed"
    shown[1] = "approved"  # the unit is pending again (a change to redeploy): no news
    assert request_mails(requests, shown, contacts, mailed, "Lab Co-op", NOW) == ([], {})


def test_a_notification_is_a_well_formed_message_whatever_the_detail_says() -> None:
    found = changes([host_checks(HostFacts("h1", error="x\nSubject: injected"),
                                 plans()["h1"], Thresholds(), {}, NOW)[0]], {})
    mail = contact_mail("Lab Co-op", ["admin@coop.test", "ops@coop.test"], found)
    assert mail is not None
    parsed = message_from_bytes(message(mail, "coophost@h2.coop.test"))
    assert parsed["To"] == "admin@coop.test, ops@coop.test"
    assert parsed["Auto-Submitted"] == "auto-generated"
    assert "\n" not in parsed["Subject"] and parsed.get_all("Subject") == [parsed["Subject"]]


def test_the_probe_script_runs_with_this_python_and_reports_json() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE,
                           json.dumps({"units": ["ssh.service"]})],
                          capture_output=True, text=True, timeout=60, check=True)
    found = json.loads(done.stdout)
    assert set(found) >= {"units", "listening", "certificates", "disk", "memory", "now"}
    assert found["disk"]["total"] > 0 and found["memory"]["total"] > 0
    assert "ssh.service" in found["units"]


def test_status_refuses_an_unknown_host_or_member_with_a_suggestion(coop: Path, cli) -> None:
    code, _, err = cli("-i", str(coop), "status", "--host", "h9")
    assert code == 2 and "no host 'h9'" in err
    code, _, err = cli("-i", str(coop), "status", "--member", "ada-boks")
    assert code == 2 and "did you mean 'ada-books'?" in err


def test_notify_timer_writes_a_service_and_timer_for_this_coop(coop: Path, cli,
                                                               tmp_path: Path) -> None:
    units = tmp_path / "units"
    code, out, err = cli("-i", str(coop), "notify", "timer", "--dir", str(units),
                         "--every", "10min", "--user", "coophost")
    assert code == 0, err
    assert "coophost-notify.timer" in out
    service = (units / "coophost-notify.service").read_text()
    assert f"-m coophost -i {coop.resolve()} notify run" in service
    assert "User=coophost" in service
    assert "OnUnitActiveSec=10min" in (units / "coophost-notify.timer").read_text()
    assert "next: systemctl daemon-reload && systemctl enable --now coophost-notify.timer" in err
    code, _, err = cli("-i", str(coop), "notify", "timer", "--dir", str(tmp_path / "no"),
                       "--every", "soon; rm -rf /")
    assert code == 2 and "--every" in err and not (tmp_path / "no").exists()
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here: the units were not verified")
    verified = subprocess.run([analyze, "verify", str(units / "coophost-notify.timer"),
                               str(units / "coophost-notify.service")],
                              capture_output=True, text=True, timeout=60, check=False)
    assert verified.returncode == 0 and not verified.stderr.strip(), verified.stderr


def test_a_service_declaring_a_bad_systemd_unit_is_refused() -> None:
    from coophost.errors import ValidationError
    from coophost.registry.catalogue import parse_service

    raw = (Path(__file__).parents[2] / "services" / "git" / "coophost.yml").read_bytes()
    bad = raw.replace(b"  - nginx.service\n", b"  - ../../etc/passwd\n")
    assert bad != raw
    with pytest.raises(ValidationError) as caught:
        parse_service(bad, "services/git/coophost.yml")
    assert "systemd[0]" in str(caught.value) and "../../etc/passwd" in str(caught.value)


def test_reach_results_become_checks_with_advice() -> None:
    from coophost.health.outside import reach_checks

    found = {c.key: c for c in reach_checks("h1", {
        "smtp": {"h2.lab.test": "ok: h2.lab.test", "h3.lab.test": "error: timed out"},
        "acme": "error: certificate verify failed"}, "https://acme.lab.test/dir")}
    assert found["h1/smtp-to/h2.lab.test"].ok
    assert not found["h1/smtp-to/h3.lab.test"].ok
    assert "port 25 of h3.lab.test" in found["h1/smtp-to/h3.lab.test"].advice
    assert not found["h1/acme"].ok and "certificates cannot renew" in found["h1/acme"].advice


def test_the_reach_script_reports_a_refused_smtp_connection() -> None:
    from coophost.health.outside import REACH

    spec = {"smtp": ["127.0.0.1"], "acme": None, "me": "controller.test"}
    done = subprocess.run([sys.executable, "-c", REACH, json.dumps(spec)], capture_output=True,
                          text=True, timeout=60, check=True)
    found = json.loads(done.stdout)
    if str(found["smtp"]["127.0.0.1"]).startswith("ok"):
        pytest.skip("an SMTP server listens on 127.0.0.1:25 here: no refusal to see")
    assert found["smtp"]["127.0.0.1"].startswith("error:") and found["acme"] is None


def test_artifact_checks_flag_what_the_store_lacks() -> None:
    """A catalogue entry with no verified copy needs attention, naming the fetch to run."""
    from coophost.health.checks import artifact_checks

    found = {c.key: c for c in artifact_checks([
        {"name": "nextcloud", "version": "34.0.4", "stored": False, "verified_at": None},
        {"name": "forgejo", "version": "9.0.1", "stored": True,
         "verified_at": "2026-12-07T08:00:00Z"}])}
    missing = found["controller/artifact/nextcloud"]
    assert not missing.ok and "not in the store" in missing.detail
    assert missing.advice.startswith("`coophost artifacts fetch nextcloud`")
    assert missing.members == ()  # never shown to a member
    assert found["controller/artifact/forgejo"].ok
