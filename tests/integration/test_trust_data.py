"""A member's data never reaches anyone else, and a takeout carries all of it (lab hosts).

One member, olga-old, gets mail on a lab host; its messages (one copied into a second folder,
which Dovecot stores as a hard link) are exported and compared file by file with the host;
its mail moves to another host and the export still finds the data left on the first; a
departure whose data is missing is refused; then it is removed, and a new member, nina-new,
is given the same domain and mailbox name on the host that holds the old messages. Nina's
mailbox is empty, its takeout holds none of Olga's mail, the old messages are in the co-op's
archive, and `members purge` deletes them (audited) once the retention period is over.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from coophost.lab.lab import Lab
from coophost.lab.mailcheck import LabMailbox, acme_roots, lab_state, mailboxes
from coophost.lab.mailprobe import IMAPAt, fetch, submit, tls_context
from coophost.registry.hosts import load_hosts
from tests.integration.conftest import LabInfo

pytestmark = pytest.mark.lab

OLD, NEW = "olga-old", "nina-new"
DOMAIN = "reused.test"
ADDRESS = f"olga@{DOMAIN}"


@dataclass
class Reuse:
    """The lab and what the tests learn as they go."""

    info: LabInfo
    lab: Lab
    roots: str
    tokens: list[str] = field(default_factory=list)
    first_host: str = ""

    def box(self) -> LabMailbox:
        return mailboxes(self.info.inventory, lab_state(self.lab))[ADDRESS]

    def host_of(self, slug: str) -> str:
        shown = json.loads(self.info.cli("member", "show", slug, "--json", check=True).stdout)
        return str(shown["placement"]["mail"])

    def on_host(self, host: str, *argv: str, check: bool = True
                ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(["docker", "exec", self.lab.container(host), *argv],
                              capture_output=True, text=True, timeout=120, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"{host}: {argv} exited {proc.returncode}: {proc.stderr}")
        return proc

    def deploy(self) -> None:
        proc = self.info.cli("deploy", "--json")
        assert proc.returncode == 0, proc.stdout + proc.stderr

    def export(self, slug: str, out: Path) -> dict[str, bytes]:
        """`member export`, extracted: every file's bytes by its archive name."""
        self.info.cli("member", "export", slug, "--out", str(out), check=True)
        files = {}
        with tarfile.open(out, "r:gz") as tar:
            for item in tar:
                if item.isfile():
                    handle = tar.extractfile(item)
                    assert handle is not None
                    files[item.name] = handle.read()
        return files


@pytest.fixture(scope="module")
def reuse(lab: LabInfo) -> Reuse:
    the_lab = Lab(lab.name, lab.inventory)
    state = lab_state(the_lab)
    for slug in (OLD, NEW):  # left by an interrupted run on a reused lab
        if (lab.inventory / "members" / f"{slug}.yml").exists():
            lab.cli("member", "remove", slug, "--yes", check=True)
    lab.cli("member", "add", OLD, "--name", "Olga (leaving)", "--contact",
            f"olga@{DOMAIN}", "--domain", DOMAIN, check=True)
    lab.cli("service", "enable", OLD, "mail", "--set", "mailboxes=[olga]", check=True)
    found = Reuse(lab, the_lab, acme_roots(the_lab, state))
    found.deploy()
    found.first_host = found.host_of(OLD)
    return found


def _is_message(path: str) -> bool:
    """A message file of a Maildir (not Dovecot's index and cache files)."""
    return "/Maildir/" in path and ("/cur/" in path or "/new/" in path)


def _mail_files(files: dict[str, bytes], token: str) -> list[str]:
    return sorted(name for name, data in files.items()
                  if _is_message(name) and token.encode() in data)


def test_export_carries_hard_linked_copies_and_matches_the_host_byte_for_byte(
        reuse: Reuse, tmp_path: Path):
    box, context = reuse.box(), tls_context(reuse.roots)
    token = "coophost-olga-" + hashlib.sha256(tmp_path.name.encode()).hexdigest()[:10]
    submit(box.mailbox, ADDRESS, f"{token} to keep", "Olga's own mail\n", context)
    assert fetch(box.mailbox, token, context) is not None
    with IMAPAt(box.mailbox.host_fqdn, box.mailbox.host_address, context) as imap:
        imap.login(box.mailbox.address, box.mailbox.password)
        imap.create("Kept")
        imap.select("INBOX")
        assert imap.copy("1:*", "Kept")[0] == "OK"
    reuse.tokens.append(token)
    found = [path for path in reuse.on_host(box.host, "grep", "-rl", token,
                                            "/var/mail/units").stdout.split()
             if _is_message(path)]
    assert len(found) == 2, found
    links = reuse.on_host(box.host, "stat", "-c", "%h", found[0]).stdout.strip()
    assert links == "2", f"Dovecot did not store the copy as a hard link ({links} links)"

    files = reuse.export(OLD, tmp_path / "olga.tar.gz")
    copies = _mail_files(files, token)
    assert len(copies) == 2, f"expected the message in INBOX and Kept, found {copies}"
    manifest = json.loads(files["MANIFEST.json"])
    # Every checksum is the host's own: sha256sum of the same file on the host.
    host_paths = {entry["path"]: "/" + entry["path"].split("/", 2)[2]
                  for entry in manifest["files"]}
    assert all(p.split("/")[1] == box.host for p in host_paths), host_paths
    out = reuse.on_host(box.host, "sha256sum", "--", *host_paths.values()).stdout
    on_host = {line[66:]: line[:64] for line in out.splitlines()}
    for entry in manifest["files"]:
        assert on_host[host_paths[entry["path"]]] == entry["sha256"], entry["path"]
        assert hashlib.sha256(files[entry["path"]]).hexdigest() == entry["sha256"]


def test_after_a_move_the_mail_is_on_the_new_host_and_the_export_holds_it(
        reuse: Reuse, tmp_path: Path):
    hosts = sorted(h.name for h in load_hosts(reuse.info.inventory) if "mail" in h.groups)
    other = next(h for h in hosts if h != reuse.first_host)
    reuse.info.cli("member", "move", OLD, "mail", other, check=True)  # deploys, carries
    reuse.deploy()
    assert reuse.host_of(OLD) == other
    left = reuse.on_host(reuse.first_host, "grep", "-rl", reuse.tokens[0],
                         "/var/mail/archive", check=False)
    assert left.returncode == 0, "the first host no longer holds the member's archived mail"
    files = reuse.export(OLD, tmp_path / "moved.tar.gz")
    found = _mail_files(files, reuse.tokens[0])
    # the message in INBOX and Kept on the new host, and the old host's archived copy of both
    live = [name for name in found if name.startswith(f"mail/{other}/var/mail/units/")]
    kept = [name for name in found if name.startswith(f"mail/{reuse.first_host}/var/mail/archive/")]
    assert len(live) == 2 and len(kept) == 2, found


def test_a_departure_whose_data_is_missing_is_refused_and_the_member_stays(
        reuse: Reuse, tmp_path: Path):
    host = reuse.host_of(OLD)
    owner = next(p for p in reuse.on_host(host, "ls", "/var/mail/units").stdout.split()
                 if p.startswith(OLD + "."))
    reuse.on_host(host, "mv", f"/var/mail/units/{owner}", f"/root/{owner}.aside")
    try:
        out = tmp_path / "olga-departure.tar.gz"
        proc = reuse.info.cli("member", "depart", OLD, "--out", str(out))
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert "none of its data" in proc.stderr, proc.stderr
        assert not out.exists() and not list(tmp_path.glob(".olga-departure*"))
        shown = json.loads(reuse.info.cli("member", "show", OLD, "--json", check=True).stdout)
        assert shown["status"] == "active"
    finally:
        reuse.on_host(host, "mv", f"/root/{owner}.aside", f"/var/mail/units/{owner}")


def test_a_new_member_given_the_same_domain_and_mailbox_sees_none_of_the_old_mail(
        reuse: Reuse, tmp_path: Path):
    token = reuse.tokens[0]
    reuse.info.cli("member", "remove", OLD, "--yes", check=True)
    reuse.info.cli("member", "add", NEW, "--name", "Nina (new owner)", "--contact",
                   f"nina@{DOMAIN}", "--domain", DOMAIN, check=True)
    reuse.info.cli("service", "enable", NEW, "mail", "--set", "mailboxes=[olga]", check=True)
    if reuse.host_of(NEW) != reuse.first_host:
        reuse.info.cli("member", "move", NEW, "mail", reuse.first_host, check=True)
    reuse.deploy()
    box, context = reuse.box(), tls_context(reuse.roots)
    assert box.member == NEW and box.host == reuse.first_host
    with IMAPAt(box.mailbox.host_fqdn, box.mailbox.host_address, context) as imap:
        imap.login(box.mailbox.address, box.mailbox.password)
        status, data = imap.select("INBOX", readonly=True)
        assert status == "OK" and int(data[0]) == 0, f"the new INBOX holds {data[0]!r} messages"
        _, listing = imap.list()
        assert not any(b"Kept" in line for line in listing if isinstance(line, bytes))
        status, _ = imap.select("Kept", readonly=True)
        assert status == "NO"
    files = reuse.export(NEW, tmp_path / "nina.tar.gz")
    assert not any(token.encode() in data for data in files.values())
    # The old messages are in the co-op's archive on the host that held them.
    for host in (reuse.first_host,):
        archived = reuse.on_host(host, "grep", "-rl", token, "/var/mail/archive").stdout
        assert f"/var/mail/archive/{OLD}." in archived, archived
        mode = reuse.on_host(host, "stat", "-c", "%a %U", "/var/mail/archive").stdout.split()
        assert mode == ["700", "root"], mode


def test_purge_deletes_the_archive_past_retention_and_keeps_the_living(reuse: Reuse):
    early = json.loads(reuse.info.cli("members", "purge", "--dry-run", "--json",
                                      check=True).stdout)
    assert not [e for e in early["deleted"] if e["owner"].startswith(OLD + ".")], \
        "archived data was due before the retention period ended"
    due = json.loads(reuse.info.cli("members", "purge", "--today", "2099-01-01", "--json",
                                    check=True).stdout)
    olga = [e for e in due["deleted"] if e["owner"].startswith(OLD + ".")]
    assert {e["host"] for e in olga} >= {reuse.first_host}, due
    assert any(e["host"] is None and e["path"].startswith("secrets/removed/") for e in olga)
    nina = json.loads(reuse.info.cli("member", "show", NEW, "--json", check=True).stdout)
    assert not [e for e in due["deleted"] if e["owner"] == f"{NEW}.{nina['life']}"]
    for host in {e["host"] for e in olga if e["host"]}:
        left = reuse.on_host(host, "ls", "/var/mail/archive").stdout.split()
        assert not [n for n in left if n.startswith(OLD + ".")], left
    audit = [json.loads(line) for line in
             (reuse.info.inventory / "audit.log").read_text().splitlines()]
    audited = {(e["host"], e["path"]) for e in audit if e["action"] == "archive deleted"}
    assert {(e["host"], e["path"]) for e in olga} <= audited, "a deletion was not audited"
    # Nina's mail folder and mailbox are untouched.
    box = reuse.box()
    units = reuse.on_host(box.host, "ls", "/var/mail/units").stdout.split()
    assert f"{NEW}.{nina['life']}" in units, units
    with IMAPAt(box.mailbox.host_fqdn, box.mailbox.host_address,
                tls_context(reuse.roots)) as imap:
        imap.login(box.mailbox.address, box.mailbox.password)
        assert imap.select("INBOX", readonly=True)[0] == "OK"
    reuse.info.cli("member", "remove", NEW, "--yes", check=True)
    reuse.deploy()
