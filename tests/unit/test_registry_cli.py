"""The registry's commands end to end (in-process): exit codes, messages, files written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from coophost.cli.main import cli as root
from coophost.secrets import SecretStore, parse_secrets_file


def test_plan_exit_codes_and_json(coop: Path, cli, record_applied) -> None:
    code, out, _ = cli("-i", str(coop), "plan")
    assert code == 1
    assert "+ ada-books/mail: add" in out
    code, out, _ = cli("-i", str(coop), "plan", "--json", "--member", "ada-books")
    data = json.loads(out)
    assert code == 1 and {c["member"] for c in data["changes"]} == {"ada-books"}
    record_applied(coop)
    code, out, _ = cli("-i", str(coop), "plan")
    assert code == 0 and out.startswith("No changes: the registry matches what was last applied")
    assert "hosts were not contacted" in out



def test_plan_sees_one_member_change(coop: Path, cli, record_applied) -> None:
    record_applied(coop)
    assert cli("-i", str(coop), "member", "suspend", "dune-press")[0] == 0
    code, out, _ = cli("-i", str(coop), "plan")
    assert code == 1
    assert "~ dune-press/mail: change" in out
    assert out.count("change\n") == 1
    assert cli("-i", str(coop), "member", "resume", "dune-press")[0] == 0
    assert cli("-i", str(coop), "plan")[0] == 0


def test_plan_unknown_member_or_host(coop: Path, cli) -> None:
    assert cli("-i", str(coop), "plan", "--member", "nobody")[0] == 2
    assert cli("-i", str(coop), "plan", "--member", "../../x")[0] == 2
    assert cli("-i", str(coop), "plan", "--host", "h9")[0] == 2


def test_member_lifecycle_keeps_comments(coop: Path, cli) -> None:
    code, _, err = cli("-i", str(coop), "member", "add", "erin", "--name", "Erin's Garden",
                       "--contact", "erin@erin.test", "--domain", "erin.test")
    assert code == 0, err
    path = coop / "members" / "erin.yml"
    text = path.read_text()
    path.write_text(text.replace("status: active", "# a note a sysadmin wrote\nstatus: active"))
    code, out, err = cli("-i", str(coop), "service", "enable", "erin", "mail",
                         "--set", "mailboxes=[erin, shop]", "--set", "quota_mb=512")
    assert code == 0, err
    assert "placed on h" in out
    text = path.read_text()
    assert "# a note a sysadmin wrote" in text
    assert "# Which host runs each service." in text
    assert "quota_mb: 512" in text and "mail: h" in text
    code, out, _ = cli("-i", str(coop), "member", "show", "erin", "--json")
    shown = json.loads(out)
    assert shown["services"]["mail"]["mailboxes"] == ["erin", "shop"]
    code, out, _ = cli("-i", str(coop), "member", "list", "--json")
    assert "erin" in {m["slug"] for m in json.loads(out)}
    assert cli("-i", str(coop), "member", "edit", "erin", "--add-domain", "erin2.test")[0] == 0
    assert "erin2.test" in path.read_text()
    assert cli("-i", str(coop), "service", "disable", "erin", "mail")[0] == 0
    assert "mail:" not in path.read_text().split("services:")[1]
    assert cli("-i", str(coop), "member", "remove", "erin", "--yes")[0] == 0
    assert not path.exists()


REJECTED_WRITES = [
    ("duplicate domain across members",
     ["member", "add", "zed", "--name", "Z", "--contact", "z@z.test", "--domain",
      "ada-books.test"], "members/zed.yml: domains[0]: 'ada-books.test': already belongs"),
    ("hostile slug", ["member", "add", "../evil", "--name", "E", "--contact", "e@e.test"],
     "(command line): member: '../evil'"),
    ("bad setting type", ["service", "enable", "ada-books", "mail", "--set", "quota_mb=lots"],
     "services.mail.quota_mb: 'lots': must be an integer"),
    ("unknown setting", ["service", "enable", "ada-books", "mail", "--set", "qouta_mb=5"],
     "did you mean 'quota_mb'?"),
    ("unknown service", ["service", "enable", "ada-books", "mial"], "did you mean 'mail'?"),
    ("move to a host outside the group", ["member", "move", "ada-books", "mail", "h9"],
     "no host 'h9'"),
    ("look-alike domain", ["member", "edit", "ada-books", "--add-domain", "\u0430da.test"],
     "look-alike"),
]


@pytest.mark.parametrize(("why", "args", "message"), REJECTED_WRITES,
                         ids=[c[0] for c in REJECTED_WRITES])
def test_rejected_writes_exit_2_and_write_nothing(coop: Path, cli, why: str, args: list[str],
                                                  message: str) -> None:
    before = {p.name: p.read_bytes() for p in (coop / "members").iterdir()}
    code, out, err = cli("-i", str(coop), *args)
    assert code == 2, out + err
    assert message in " ".join(err.split())
    assert "Traceback" not in err
    assert {p.name: p.read_bytes() for p in (coop / "members").iterdir()} == before


def test_editor_rejection_keeps_the_edit_aside(coop: Path, cli, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    editor = tmp_path / "editor.sh"
    editor.write_text("#!/bin/sh\nsed -i 's/^contact: .*/contact: not-an-email/' \"$1\"\n")
    editor.chmod(0o755)
    monkeypatch.setenv("EDITOR", str(editor))
    before = (coop / "members" / "ada-books.yml").read_text()
    code, _, err = cli("-i", str(coop), "member", "edit", "ada-books")
    assert code == 2
    assert "members/ada-books.yml: contact: 'not-an-email'" in err
    assert (coop / "members" / "ada-books.yml").read_text() == before
    assert (coop / ".coophost" / "rejected" / "ada-books.yml").exists()


def test_member_move_records_and_plan_shows_it(coop: Path, cli, record_applied) -> None:
    assert cli("-i", str(coop), "service", "enable", "ada-books", "mail")[0] == 0
    placed = (coop / "members" / "ada-books.yml").read_text()
    target = "h1" if "mail: h1" not in placed else "h3"
    record_applied(coop)
    code, out, err = cli("-i", str(coop), "member", "move", "ada-books", "mail", target,
                         "--record-only")
    assert code == 0, err
    code, out, _ = cli("-i", str(coop), "plan")
    assert code == 1 and "moved from" in out and "moved to" in out


@pytest.mark.usefixtures("coming_services_available")
def test_no_host_fits_is_a_clear_error(coop: Path, cli) -> None:
    hosts = coop / "hosts.yml"
    hosts.write_text(hosts.read_text().replace("ram_mb: 4096", "ram_mb: 100"))
    code, _, err = cli("-i", str(coop), "service", "enable", "ada-books", "nextcloud")
    assert code == 2
    assert "no host of the 'nextcloud' group has" in err


def test_host_add_list_remove(coop: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(root, ["-i", str(coop), "host", "add", "h4",
                                  "--address", "10.0.0.4", "--ram-mb", "8192",
                                  "--disk-gb", "100", "--group", "mail"])
    assert result.exit_code == 0, result.output
    assert "h4:" in (coop / "hosts.yml").read_text()
    result = runner.invoke(root, ["-i", str(coop), "host", "list", "--json"])
    assert "h4" in {row["host"] for row in json.loads(result.output)}
    result = runner.invoke(root, ["-i", str(coop), "host", "add", "h5",
                                  "--address", "x", "--ram-mb", "1", "--disk-gb", "1",
                                  "--group", "mial"])
    assert result.exit_code != 0
    result = runner.invoke(root, ["-i", str(coop), "host", "remove", "h4"])
    assert result.exit_code == 0, result.output
    assert "h4" not in (coop / "hosts.yml").read_text()


def test_init_creates_a_valid_coop(tmp_path: Path, cli) -> None:
    target = tmp_path / "new-coop"
    code, _, err = cli("init", str(target), "--name", "New Co-op", "--domain", "new.test",
                       "--contact", "admin@new.test")
    assert code == 0, err
    assert (target / "vault-password").stat().st_mode & 0o777 == 0o600
    assert cli("-i", str(target), "member", "list")[0] == 0
    assert cli("init", str(target), "--name", "X", "--domain", "x.test",
               "--contact", "a@x.test")[0] == 2


@pytest.mark.usefixtures("coming_services_available")
def test_secrets_encrypted_at_rest_and_never_in_output(coop: Path, cli) -> None:
    code, _, err = cli("-i", str(coop), "service", "enable", "bread-coop", "nextcloud")
    assert code == 0, err
    code, render_out, err = cli("-i", str(coop), "render")
    assert code == 0, err
    from coophost.registry.catalogue import load_catalogue
    from coophost.registry.loader import load_coop

    settings, _ = load_coop(coop)
    values = SecretStore(coop, settings.vault, load_catalogue()).reveal(_owner(coop, "bread-coop"))
    password = values["nextcloud"]["db_password"]
    assert len(password) == 32
    on_disk = b"".join(p.read_bytes() for p in coop.rglob("*") if p.is_file())
    assert password.encode() not in on_disk
    assert b"PRIVATE KEY" not in on_disk
    outputs = render_out
    for args in (["plan"], ["plan", "--json"], ["member", "show", "bread-coop", "--json"],
                 ["render"]):
        outputs += "".join(cli("-i", str(coop), *args)[1:])
    assert password not in outputs
    secrets_file = (coop / "secrets" / f"{_owner(coop, 'bread-coop')}.yml").read_text()
    assert parse_secrets_file(secrets_file)["nextcloud"]["db_password"].startswith(
        "$ANSIBLE_VAULT;1.1;AES256")
    code, shown, _ = cli("-i", str(coop), "secrets", "show", "bread-coop", "nextcloud",
                         "db_password")
    assert code == 0 and shown.strip() == f"nextcloud.db_password: {password}"


def test_secrets_are_stable_across_renders(coop: Path, cli) -> None:
    cli("-i", str(coop), "render")
    first = (coop / "secrets" / f"{_owner(coop, 'ada-books')}.yml").read_text()
    cli("-i", str(coop), "render")
    assert (coop / "secrets" / f"{_owner(coop, 'ada-books')}.yml").read_text() == first


def test_missing_vault_password_is_exit_2(coop: Path, cli,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COOPHOST_VAULT_PASSWORD")
    coop_yml = coop / "coop.yml"
    coop_yml.write_text(coop_yml.read_text().replace("create_password_file: true",
                                                     "create_password_file: false"))
    code, _, err = cli("-i", str(coop), "render")
    assert code == 2
    assert "no vault password" in err or "vault password file" in err


def _owner(coop: Path, slug: str) -> str:
    """The owner key (slug and life) a member's secrets file is named by."""
    from coophost.registry.loader import load_registry

    return load_registry(coop, need_hosts=False).registry.members[slug].owner
