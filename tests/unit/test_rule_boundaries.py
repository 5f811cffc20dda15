"""Every rule at its boundary: exactly at a limit is accepted, one past it is refused, and each
refusal names the rule that refused it. scripts/mutation-check removes or shifts each rule and
expects these tests to fail (docs/testing.md, "Mutation check")."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest

from coophost.errors import ConfigError, UsageError, ValidationError
from coophost.registry.placement import Demand, NoHostFits, place

# ---- placement: capacity ----------------------------------------------------------------------

CAP = {"h1": {"ram_mb": 1000, "disk_gb": 10}}
GROUPS = {"mail": ["h1"]}


def unit(member: str, ram: int, disk: int, recorded: str | None = None) -> Demand:
    return Demand(member, "mail", "mail", {"ram_mb": ram, "disk_gb": disk}, recorded)


@pytest.mark.parametrize(("ram", "disk"), [(1000, 10), (1000, 0), (0, 10)])
def test_a_unit_that_fills_a_host_exactly_fits(ram: int, disk: int) -> None:
    assert place([unit("a", ram, disk)], CAP, GROUPS).hosts == {("a", "mail"): "h1"}


def test_a_unit_that_fills_what_recorded_units_leave_exactly_fits() -> None:
    result = place([unit("a", 400, 4, recorded="h1"), unit("b", 600, 6)], CAP, GROUPS)
    assert result.hosts[("b", "mail")] == "h1"
    assert result.usage["h1"] == {"ram_mb": 1000, "disk_gb": 10}


@pytest.mark.parametrize(("ram", "disk"), [(1001, 10), (1000, 11), (1001, 0), (0, 11)])
def test_one_past_a_hosts_capacity_does_not_fit(ram: int, disk: int) -> None:
    with pytest.raises(NoHostFits) as caught:
        place([unit("a", ram, disk)], CAP, GROUPS)
    assert f"has {ram} MB RAM and {disk} GB disk free" in str(caught.value)
    assert "h1: 1000 MB/10 GB free" in str(caught.value)


def test_one_past_what_recorded_units_leave_does_not_fit() -> None:
    with pytest.raises(NoHostFits, match="h1: 600 MB/6 GB free"):
        place([unit("a", 400, 4, recorded="h1"), unit("b", 601, 6)], CAP, GROUPS)
    with pytest.raises(NoHostFits, match="h1: 600 MB/6 GB free"):
        place([unit("a", 400, 4, recorded="h1"), unit("b", 600, 7)], CAP, GROUPS)


@pytest.mark.parametrize(("ram", "disk", "over"), [
    pytest.param(1000, 10, [], id="full"), pytest.param(1001, 10, ["h1"], id="ram-over"),
    pytest.param(1000, 11, ["h1"], id="disk-over")])
def test_overcommitted_only_past_capacity(ram: int, disk: int, over: list[str]) -> None:
    result = place([unit("a", ram, disk, recorded="h1")], CAP, GROUPS)
    assert result.overcommitted(CAP) == over


# ---- a host removed from hosts.yml -------------------------------------------------------------

def test_a_unit_recorded_on_a_host_that_is_gone_is_placed_anew() -> None:
    result = place([unit("a", 10, 1, recorded="h9")], CAP, GROUPS)
    assert result.hosts == {("a", "mail"): "h1"}
    assert result.new == {("a", "mail")}


def _on_h1(coop: Path) -> list[tuple[str, str]]:
    """(file, placement field) of every unit the sample members place on h1."""
    from coophost.registry.loader import load_registry

    members = load_registry(coop, use_cache=False).registry.members.values()
    found = sorted((m.file, f"placement.{service}") for m in members
                   for service, host in m.placement.items() if host == "h1")
    assert found, "precondition: the sample co-op places no unit on h1"
    return found


def _without_h1(coop: Path) -> None:
    """Rewrite the test co-op's hosts.yml without h1."""
    from tests.unit.conftest import HOSTS_YML

    lines = HOSTS_YML.splitlines()
    start = lines.index("    h1:")
    kept = lines[:start] + lines[start + 3:]
    text = "\n".join(kept).replace("h1: {}, ", "") + "\n"
    assert "h1" not in text
    (coop / "hosts.yml").write_text(text)


def test_a_placement_on_a_host_removed_from_hosts_yml_is_refused_by_the_registry(
        coop: Path) -> None:
    from coophost.registry.loader import load_registry

    placed = _on_h1(coop)
    _without_h1(coop)
    with pytest.raises(ValidationError) as caught:
        load_registry(coop, use_cache=False)
    assert (caught.value.file, caught.value.field) in placed
    assert caught.value.value == "h1"
    assert "no such host in hosts.yml" in caught.value.problem


def test_a_placement_on_a_host_removed_from_hosts_yml_is_refused_by_the_plan(
        coop: Path) -> None:
    from coophost.desired.units import compute

    placed = _on_h1(coop)
    compute(coop)  # a warm cache must not hide the removal
    _without_h1(coop)
    with pytest.raises(ValidationError) as caught:
        compute(coop)
    assert (caught.value.file, caught.value.field) in placed
    assert caught.value.value == "h1"
    assert "no such host in hosts.yml" in caught.value.problem


def test_a_host_with_units_placed_on_it_cannot_be_removed(coop: Path) -> None:
    from coophost.lock import coop_lock
    from coophost.registry.edit import remove_host
    from coophost.registry.loader import load_registry

    units = [f"{file.removeprefix('members/').removesuffix('.yml')}/"
             f"{field.removeprefix('placement.')}" for file, field in _on_h1(coop)]
    before = (coop / "hosts.yml").read_text()
    with pytest.raises(UsageError) as caught, coop_lock(coop):
        remove_host(coop, load_registry(coop, need_hosts=False), "h1")
    assert f"host 'h1' still runs {len(units)} unit(s): {', '.join(units)}" in str(
        caught.value)
    assert (coop / "hosts.yml").read_text() == before


def test_a_host_with_units_applied_on_it_cannot_be_removed(coop: Path) -> None:
    from coophost.lock import coop_lock
    from coophost.registry.edit import remove_host
    from coophost.registry.loader import load_registry

    hosts = coop / "hosts.yml"
    hosts.write_text(hosts.read_text().replace(
        "  hosts:\n", "  hosts:\n    h4: {ansible_host: 127.0.0.1, ansible_port: 40004}\n", 1))
    with pytest.raises(UsageError, match=r"state\.db still records 2 unit"), coop_lock(coop):
        remove_host(coop, load_registry(coop, need_hosts=False), "h4", applied_units=2)
    assert "h4:" in hosts.read_text()
    with coop_lock(coop):  # nothing placed or applied there: removed
        remove_host(coop, load_registry(coop, need_hosts=False), "h4")
    assert "h4" not in hosts.read_text()


# ---- the member shell's size limits -----------------------------------------------------------

def _shell(coop: Path, command: str) -> tuple[int, str]:
    from coophost.members.shell import run

    out = io.BytesIO()
    return run(coop, "ada-books", command, out), out.getvalue().decode()


def test_a_command_of_exactly_the_size_limit_runs(coop: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from coophost.members.shell import MAX_COMMAND, split_command

    assert MAX_COMMAND == 2048
    command = "status" + " " * (MAX_COMMAND - len("status"))
    assert split_command(command) == ["status"]
    code, out = _shell(coop, command)
    assert code == 0, capsys.readouterr().err
    assert "ada-books" in out


def test_a_command_one_past_the_size_limit_is_refused(coop: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from coophost.members.shell import split_command

    command = "status" + " " * (2049 - len("status"))
    with pytest.raises(UsageError, match=r"command too long \(2049 characters; at most 2048\)"):
        split_command(command)
    code, out = _shell(coop, command)
    assert (code, out) == (2, "")
    assert "refused: command too long" in capsys.readouterr().err


def test_exactly_the_argument_limit_is_read() -> None:
    from coophost.members.shell import MAX_ARGS, split_command

    assert MAX_ARGS == 40
    assert split_command(" ".join(["x"] * 40)) == ["x"] * 40


def test_one_argument_past_the_limit_is_refused(coop: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from coophost.members.shell import split_command

    with pytest.raises(UsageError, match=r"too many arguments \(41; at most 40\)"):
        split_command(" ".join(["x"] * 41))
    code, _ = _shell(coop, "status" + " --json" * 40)
    assert code == 2
    assert "refused: too many arguments (41; at most 40)" in capsys.readouterr().err


# ---- member files: mailboxes, SSH keys, display names, email lengths -------------------------

BASE = """\
slug: alice
name: Alice
contact: alice@alice.test
domains: [alice.test]
"""


def check(coop_dir: Path, text: str):  # type: ignore[no-untyped-def]
    from coophost.registry.catalogue import load_catalogue
    from coophost.registry.loader import load_coop
    from coophost.registry.parse import parse_member
    from coophost.registry.yamlio import load_text

    catalogue = load_catalogue()
    coop, _ = load_coop(coop_dir, catalogue)
    return parse_member(load_text(text, "members/alice.yml"), "members/alice.yml", "alice",
                        coop, catalogue)


def refused(coop_dir: Path, text: str, field: str, problem: str) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        check(coop_dir, text)
    assert (caught.value.file, caught.value.field) == ("members/alice.yml", field), caught.value
    assert problem in caught.value.problem, caught.value
    return caught.value


def mail(mailboxes: list[str], extra: str = "") -> str:
    names = ", ".join(f"'{m}'" for m in mailboxes)
    return BASE + f"services: {{mail: {{mailboxes: [{names}]{extra}}}}}\n"


@pytest.mark.parametrize("name", [
    pytest.param("a" * 64, id="64-chars"), "a", "first.last", "a+b", "a_b", "a-b", "9"])
def test_mailbox_names_accepted(coop: Path, name: str) -> None:
    assert check(coop, mail([name])).services["mail"]["mailboxes"] == [name]


@pytest.mark.parametrize("name", [
    pytest.param("a" * 65, id="65-chars"), pytest.param("a..b", id="double-dot"),
    pytest.param("a.", id="trailing-dot"), pytest.param(".a", id="leading-dot"),
    pytest.param("-a", id="leading-hyphen"), pytest.param("a-", id="trailing-hyphen"),
    pytest.param("_a", id="leading-underscore"), pytest.param("A", id="uppercase"),
    pytest.param("a@b", id="at-sign"), pytest.param("a b", id="space"),
    pytest.param("", id="empty")])
def test_mailbox_names_refused(coop: Path, name: str) -> None:
    refused(coop, mail([name]), "services.mail.mailboxes[0]", "lowercase mail name")


def test_an_alias_name_follows_the_mailbox_rules(coop: Path) -> None:
    alias = "b" * 65
    refused(coop, mail(["a"], f", aliases: {{{alias}: [a]}}"), f"services.mail.aliases.{alias}",
            "lowercase mail name")
    assert check(coop, mail(["a"], ", aliases: {" + "b" * 64 + ": [a]}"))


def test_mailboxes_up_to_the_coops_allowance(coop: Path) -> None:
    names = [f"m{i}" for i in range(21)]
    assert len(check(coop, mail(names[:20])).services["mail"]["mailboxes"]) == 20
    refused(coop, mail(names), "services.mail.mailboxes", "the co-op allows at most 20")


def test_quota_up_to_the_coops_allowance(coop: Path) -> None:
    assert check(coop, mail(["a"], ", quota_mb: 4096")).services["mail"]["quota_mb"] == 4096
    refused(coop, mail(["a"], ", quota_mb: 4097"), "services.mail.quota_mb",
            "the co-op allows at most 4096")


def _ed25519(seed: int = 0) -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32).public_key()
    return key.public_bytes(serialization.Encoding.OpenSSH,
                            serialization.PublicFormat.OpenSSH).decode()


def _blob(*fields: bytes) -> str:
    return base64.b64encode(b"".join(len(f).to_bytes(4, "big") + f for f in fields)).decode()


def keys(*lines: str) -> str:
    quoted = ", ".join('"' + line.replace("\\", "\\\\").replace("\n", "\\n")
                       .replace("\r", "\\r") + '"' for line in lines)
    return BASE + f"ssh_keys: [{quoted}]\n"


def test_a_real_key_with_a_comment_of_the_longest_length_is_accepted(coop: Path) -> None:
    line = f"{_ed25519()} {'c' * 200}"
    assert check(coop, keys(line)).ssh_keys == (line,)


def test_a_key_comment_one_past_the_limit_is_refused(coop: Path) -> None:
    refused(coop, keys(f"{_ed25519()} {'c' * 201}"), "ssh_keys[0]", "longer than 200")


@pytest.mark.parametrize("kind", ["ssh-dss", "ssh-foo"])
def test_a_key_type_not_on_the_allowlist_is_refused(coop: Path, kind: str) -> None:
    blob = _blob(kind.encode(), bytes(1) + b"p" * 128, b"q" * 20)
    line = f"{kind} {blob} old"
    refused(coop, keys(line), "ssh_keys[0]", "key type must be one of")


def test_a_key_whose_blob_is_another_type_is_refused(coop: Path) -> None:
    blob = _ed25519().split()[1]
    refused(coop, keys(f"ssh-rsa {blob}"), "ssh_keys[0]", "does not match its type")


@pytest.mark.parametrize("joint", [pytest.param("\n", id="lf"), pytest.param("\r", id="cr"),
                                   pytest.param("\r\n", id="crlf")])
def test_two_key_lines_in_one_entry_are_refused(coop: Path, joint: str) -> None:
    refused(coop, keys(_ed25519(1) + joint + _ed25519(2)), "ssh_keys[0]",
            "must be one OpenSSH public key line")


def test_the_key_line_length_limit(coop: Path) -> None:
    """At 16384 characters a line is still read (here: refused as bad base64); at 16385 it is
    refused by its length, before anything decodes it."""
    head = "ssh-ed25519 "
    refused(coop, keys(head + "!" * (16384 - len(head))), "ssh_keys[0]", "not valid base64")
    refused(coop, keys(head + "!" * (16385 - len(head))), "ssh_keys[0]",
            "must be one OpenSSH public key line")


def test_at_most_50_keys(coop: Path) -> None:
    lines = [_ed25519(seed) for seed in range(1, 52)]
    assert len(check(coop, keys(*lines[:50])).ssh_keys) == 50
    refused(coop, keys(*lines), "ssh_keys", "at most 50 items")


def test_a_display_name_of_exactly_200_characters_is_accepted(coop: Path) -> None:
    name = "N" * 200
    assert check(coop, BASE.replace("name: Alice", f"name: {name}")).name == name


def test_a_display_name_of_201_characters_is_refused(coop: Path) -> None:
    refused(coop, BASE.replace("name: Alice", f"name: {'N' * 201}"), "name",
            "longer than 200 characters")


LONG_DOMAIN = f"{'a' * 63}.{'b' * 63}.{'c' * 56}.test"  # 189 characters: 64 + 1 + 189 = 254


def test_an_email_local_part_of_64_characters_is_accepted(coop: Path) -> None:
    contact = f"{'l' * 64}@alice.test"
    assert check(coop, BASE.replace("alice@alice.test", contact)).contact == contact


def test_an_email_local_part_of_65_characters_is_refused(coop: Path) -> None:
    refused(coop, BASE.replace("alice@alice.test", f"{'l' * 65}@alice.test"), "contact",
            "the part before @")


def test_an_email_of_254_characters_is_accepted(coop: Path) -> None:
    contact = f"{'l' * 64}@{LONG_DOMAIN}"
    assert len(contact) == 254
    assert check(coop, BASE.replace("alice@alice.test", contact)).contact == contact


def test_an_email_of_255_characters_is_refused(coop: Path) -> None:
    contact = f"{'l' * 64}@{LONG_DOMAIN.replace('c' * 56, 'c' * 57)}"
    assert len(contact) == 255
    refused(coop, BASE.replace("alice@alice.test", contact), "contact", "must be an email")


# ---- secrets: file mode, clear text, stale hashes ---------------------------------------------

MEMBER = "dune-press"


def _render(cli, coop: Path) -> None:  # type: ignore[no-untyped-def]
    code, out, err = cli("-i", str(coop), "render")
    assert code == 0, out + err


def _secrets_file(coop: Path, slug: str = MEMBER) -> Path:
    [path] = [p for p in (coop / "secrets").glob("*.yml")
              if p.name == f"{slug}.yml" or p.name.startswith(f"{slug}.")]
    return path


def test_secrets_and_host_vars_files_are_0600(coop: Path, cli) -> None:  # type: ignore[no-untyped-def]
    _render(cli, coop)
    written = sorted((coop / "secrets").glob("*.yml")) + sorted(
        (coop / "host_vars").glob("*.yml"))
    assert [p.name for p in written if p.parent.name == "host_vars"] == [
        "h1.yml", "h2.yml", "h3.yml"]
    assert _secrets_file(coop) in written
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in written} == {
        p.name: "0o600" for p in written}
    path = _secrets_file(coop)  # a file a careless hand left readable is written 0600 again
    path.chmod(0o644)
    member = coop / "members" / f"{MEMBER}.yml"
    member.write_text(member.read_text().replace("[editors, submissions]",
                                                 "[editors, submissions, extra]"))
    _render(cli, coop)
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_a_vault_password_file_made_on_first_need_is_0600(
        coop: Path, cli, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("COOPHOST_VAULT_PASSWORD")
    _render(cli, coop)
    assert oct((coop / "vault-password").stat().st_mode & 0o777) == "0o600"


def test_clear_text_in_a_secrets_file_is_refused() -> None:
    from coophost.secrets import parse_secrets_file

    text = "mail:\n  dkim_key: !vault |\n    -----BEGIN PRIVATE KEY-----\n    clear\n"
    with pytest.raises(ConfigError, match="dkim_key is not vault-encrypted"):
        parse_secrets_file(text)


def test_render_refuses_a_secrets_file_holding_clear_text(coop: Path, cli) -> None:  # type: ignore[no-untyped-def]
    from coophost.secrets import format_secrets_file, parse_secrets_file

    _render(cli, coop)
    path = _secrets_file(coop)
    data = parse_secrets_file(path.read_text())
    data["mail"]["dkim_key"] = "-----BEGIN PRIVATE KEY-----\nCLEAR-TEXT-SECRET\n"
    path.write_text(format_secrets_file(MEMBER, data))
    before = {p: p.read_bytes() for p in (coop / "host_vars").glob("*.yml")}
    code, out, err = cli("-i", str(coop), "render")
    assert code == 2, out + err
    assert "dkim_key is not vault-encrypted" in err
    assert {p: p.read_bytes() for p in (coop / "host_vars").glob("*.yml")} == before
    assert "CLEAR-TEXT-SECRET" not in out + err


def test_a_new_mailbox_password_never_keeps_the_old_hash(coop: Path, cli) -> None:  # type: ignore[no-untyped-def]
    """Deleting a mailbox's password (to give it a new one) must drop its old hash too, even
    when the hash entry is left behind: hosts must get the hash of the new password."""
    from argon2 import PasswordHasher
    from argon2.exceptions import VerifyMismatchError

    from coophost.registry.catalogue import load_catalogue
    from coophost.registry.loader import load_coop
    from coophost.secrets import SecretStore, format_secrets_file, parse_secrets_file

    def store() -> SecretStore:
        settings, _ = load_coop(coop)
        return SecretStore(coop, settings.vault, load_catalogue())

    _render(cli, coop)
    path = _secrets_file(coop)
    owner = path.name.removesuffix(".yml")
    old = store().reveal(owner)["mail"]["mailbox_passwords/editors"]
    data = parse_secrets_file(path.read_text())
    del data["mail"]["mailbox_passwords/editors"]  # the hash entry stays
    path.write_text(format_secrets_file(owner, data))
    _render(cli, coop)
    fresh = store()
    new = fresh.reveal(owner)["mail"]["mailbox_passwords/editors"]
    assert new != old
    rendered = _rendered_hashes(coop, fresh)
    assert set(rendered) == {"editors", "submissions"}
    encoded = rendered["editors"].removeprefix("{ARGON2ID}")
    assert PasswordHasher().verify(encoded, new)
    with pytest.raises(VerifyMismatchError):
        PasswordHasher().verify(encoded, old)


def _rendered_hashes(coop: Path, store) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """MEMBER's mailbox hashes as the rendered host file gives them to its mail host."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_constructor("!unsafe", lambda loader, node: loader.construct_scalar(node))
    Loader.add_constructor("!vault", lambda loader, node: loader.construct_scalar(node))
    for path in sorted((coop / "host_vars").glob("*.yml")):
        for unit in yaml.load(path.read_text(), Loader=Loader)["coophost_mail_units"]:
            if unit["member"]["slug"] == MEMBER:
                return {mailbox: store.vault.decrypt(text).decode() for mailbox, text
                        in unit["secrets"]["mailbox_password_hashes"].items()}
    raise AssertionError(f"{MEMBER} is rendered on no host")
