"""Every validation problem of a file (and of a whole co-op load) is reported in one run.

One error names each problem (file, field, value, problem) in the wording a single problem
has; exit 2; nothing written. With --json the error lists them under `errors`, the first
one's fields kept at the top.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from coophost.errors import ValidationError, ValidationErrors
from coophost.registry.catalogue import load_catalogue, parse_service
from coophost.registry.loader import load_registry

THREE_PROBLEMS = {
    ("members/ada-books.yml", "contact", "must be an email address"),
    ("members/ada-books.yml", "stauts", "unknown key"),
    ("members/ada-books.yml", "ssh_keys[0]", "key type must be one"),
}


def _break_ada(coop: Path) -> None:
    """Give members/ada-books.yml three distinct problems."""
    path = coop / "members" / "ada-books.yml"
    text = path.read_text()
    text = text.replace("contact: ada@ada-books.test", "contact: not-an-address")
    text = text.replace("status: active", "status: active\nstauts: suspended")
    text = text.replace("ssh_keys: []", "ssh_keys: [not-a-key]")
    path.write_text(text)


def _snapshot(coop: Path) -> dict[str, bytes]:
    """The co-op's registry files (the state folder, a cache and a lock, aside)."""
    return {str(p.relative_to(coop)): p.read_bytes() for p in sorted(coop.rglob("*"))
            if p.is_file() and ".coophost" not in p.parts}


def test_a_member_file_with_three_problems_reports_all_three(coop: Path, cli) -> None:
    _break_ada(coop)
    code, out, err = cli("-i", str(coop), "member", "list")
    assert code == 2, out + err
    flat = " ".join(err.split())
    assert "members/ada-books.yml: contact: 'not-an-address': must be an email address" in flat
    assert "members/ada-books.yml: stauts: 'stauts': unknown key" in flat
    assert "hint: did you mean 'status'?" in flat
    assert "members/ada-books.yml: ssh_keys[0]: 'not-a-key': key type must be one of" in flat
    assert "3 problems found" in flat
    assert flat.count("error:") == 3


def test_a_member_file_with_three_problems_lists_them_in_json(coop: Path, cli) -> None:
    _break_ada(coop)
    code, out, _ = cli("-i", str(coop), "member", "list", "--json")
    assert code == 2
    error = json.loads(out)["error"]
    assert error["kind"] == "validation" and error["exit_code"] == 2
    listed = {(e["file"], e["field"], " ".join(e["problem"].split()[:5]))
              for e in error["errors"]}
    assert listed == THREE_PROBLEMS
    first = error["errors"][0]
    assert (error["file"], error["field"], error["value"], error["problem"]) == (
        first["file"], first["field"], first["value"], first["problem"])
    assert {"hint": "did you mean 'status'?"}.items() <= next(
        e for e in error["errors"] if e["field"] == "stauts").items()


def test_one_problem_keeps_the_single_error_wording_and_json(coop: Path, cli) -> None:
    path = coop / "members" / "ada-books.yml"
    path.write_text(path.read_text().replace("contact: ada@ada-books.test", "contact: nope"))
    code, out, err = cli("-i", str(coop), "member", "list", "--json")
    assert code == 2
    assert "problems found" not in err and err.count("error:") == 1
    error = json.loads(out)["error"]
    assert error["message"] == ("members/ada-books.yml: contact: 'nope': must be an email "
                                "address like name@example.org")
    assert [e["field"] for e in error["errors"]] == ["contact"] == [error["field"]]


def test_a_coop_file_with_two_problems_reports_both(coop: Path, cli) -> None:
    path = coop / "coop.yml"
    text = path.read_text().replace("domain: lab.test", "domain: Not A Domain")
    path.write_text(text.replace("suspended_mail: accept", "suspended_mail: drop"))
    code, out, err = cli("-i", str(coop), "member", "list", "--json")
    assert code == 2
    error = json.loads(out)["error"]
    assert {(e["file"], e["field"]) for e in error["errors"]} == {
        ("coop.yml", "domain"), ("coop.yml", "suspended_mail")}
    flat = " ".join(err.split())
    assert "coop.yml: domain: 'Not A Domain':" in flat
    assert "coop.yml: suspended_mail: 'drop': must be one of accept, bounce" in flat


def test_problems_in_two_member_files_are_both_reported(coop: Path, cli) -> None:
    for slug, old, new in (("ada-books", "contact: ada@ada-books.test", "contact: nope"),
                           ("bread-coop", "status: active", "status: sleeping")):
        path = coop / "members" / f"{slug}.yml"
        assert old in path.read_text()
        path.write_text(path.read_text().replace(old, new))
    code, out, err = cli("-i", str(coop), "plan")
    assert code == 2, out + err
    flat = " ".join(err.split())
    assert "members/ada-books.yml: contact: 'nope':" in flat
    assert "members/bread-coop.yml: status: 'sleeping': must be one of" in flat
    assert "2 problems found" in flat


def test_the_registry_load_names_every_broken_member_file(coop: Path) -> None:
    ada = coop / "members" / "ada-books.yml"
    ada.write_text(ada.read_text().replace("contact: ada@ada-books.test", "contact: nope"))
    with pytest.raises(ValidationError) as caught:
        load_registry(coop, use_cache=False)
    assert [e.file for e in caught.value.errors] == ["members/ada-books.yml"]
    cycle = coop / "members" / "cycle-works.yml"
    cycle.write_text(cycle.read_text().replace("slug: cycle-works", "slug: Cycle"))
    with pytest.raises(ValidationErrors) as caught:
        load_registry(coop, use_cache=False)
    assert [(e.file, e.field) for e in caught.value.errors] == [
        ("members/ada-books.yml", "contact"), ("members/cycle-works.yml", "slug")]


def test_member_add_reports_every_bad_option_and_writes_nothing(coop: Path, cli) -> None:
    before = _snapshot(coop)
    code, out, err = cli("-i", str(coop), "member", "add", "zed", "--name", "Zed",
                         "--contact", "zed-at-nowhere", "--domain", "NOT..valid")
    assert code == 2, out + err
    flat = " ".join(err.split())
    assert "members/zed.yml: contact: 'zed-at-nowhere':" in flat
    assert "members/zed.yml: domains[0]: 'NOT..valid':" in flat
    assert "2 problems found" in flat
    assert _snapshot(coop) == before


def test_member_edit_reports_every_bad_option_and_writes_nothing(coop: Path, cli) -> None:
    before = _snapshot(coop)
    code, _, err = cli("-i", str(coop), "member", "edit", "ada-books", "--contact", "nope",
                       "--name", " ")
    assert code == 2, err
    flat = " ".join(err.split())
    assert "members/ada-books.yml: contact: 'nope':" in flat
    assert "members/ada-books.yml: name: ' ': must not be empty" in flat
    assert "2 problems found" in flat
    assert _snapshot(coop) == before


def test_hosts_file_with_two_problems_reports_both(coop: Path, cli) -> None:
    path = coop / "hosts.yml"
    text = path.read_text().replace("ansible_port: 40001", "ansible_port: 700000", 1)
    path.write_text(text.replace("coophost_fqdn: h3.lab.test", "coophost_fqdn: H3..test", 1))
    code, out, _ = cli("-i", str(coop), "plan", "--json")
    assert code == 2
    fields = {e["field"] for e in json.loads(out)["error"]["errors"]}
    assert fields == {"hosts.h1.ansible_port", "hosts.h3.coophost_fqdn"}


def test_a_catalogue_entry_reports_all_its_problems(tmp_path: Path) -> None:
    source = load_catalogue().services["mail"].folder
    assert source is not None
    raw = (source / "coophost.yml").read_text()
    bad = raw.replace("group:", "gruop:", 1).replace("version:", "version: 0\nold_version:", 1)
    with pytest.raises(ValidationError) as caught:
        parse_service(bad.encode(), "services/mail/coophost.yml")
    fields = {e.field for e in caught.value.errors}
    assert {"gruop", "group"} <= fields and len(caught.value.errors) >= 3


def test_the_catalogue_reports_problems_of_two_entries(tmp_path: Path) -> None:
    services = load_catalogue().services
    for name in ("mail", "git"):
        folder = services[name].folder
        assert folder is not None
        (tmp_path / name).mkdir()
        text = (folder / "coophost.yml").read_text().replace("group:", "gruop:", 1)
        (tmp_path / name / "coophost.yml").write_text(text)
    with pytest.raises(ValidationErrors) as caught:
        load_catalogue.__wrapped__(tmp_path)
    assert {e.file for e in caught.value.errors} == {"services/mail/coophost.yml",
                                                     "services/git/coophost.yml"}


def test_combine_keeps_one_problem_as_itself_and_drops_repeats() -> None:
    one = ValidationError("f", "a", 1, "bad")
    assert ValidationError.combine([one]) is one
    again = ValidationError("f", "a", 1, "bad")
    assert ValidationError.combine([one, again]) is one
    both = ValidationError.combine([one, ValidationError("g", "b", 2, "worse")])
    assert isinstance(both, ValidationErrors)
    assert both.message == "f: a: 1: bad\ng: b: 2: worse"
    assert (both.file, both.field, both.problem) == ("f", "a", "bad")


def test_the_member_shell_hides_an_error_that_also_names_another_file() -> None:
    from coophost.members.shell import _members_business

    own = ValidationError("members/ada.yml", "contact", "x", "bad")
    other = ValidationError("members/bob.yml", "contact", "y", "bad")
    assert _members_business(ValidationError.combine([own]), "ada")
    assert not _members_business(ValidationError.combine([own, other]), "ada")
