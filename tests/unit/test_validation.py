"""Validation of member files with hostile and wrong values (table-driven)."""

from __future__ import annotations

from pathlib import Path

import pytest

from coophost.errors import ValidationError
from coophost.registry.catalogue import load_catalogue
from coophost.registry.loader import load_coop
from coophost.registry.parse import parse_member
from coophost.registry.yamlio import load_text

BASE = """\
slug: alice
name: Alice
contact: alice@alice.test
domains: [alice.test]
"""


def check(coop_dir: Path, text: str, slug: str = "alice"):
    catalogue = load_catalogue()
    coop, _ = load_coop(coop_dir, catalogue)
    label = f"members/{slug}.yml"
    return parse_member(load_text(text, label), label, slug, coop, catalogue)


REFUSED = [
    # (why, member file text, field path in the message, words in the problem)
    ("shell metacharacters in a slug", BASE.replace("slug: alice", "slug: 'a;rm -rf /'"),
     "slug", "must match"),
    ("path traversal in a slug", BASE.replace("slug: alice", "slug: ../../etc/passwd"),
     "slug", "must match"),
    ("uppercase slug", BASE.replace("slug: alice", "slug: Alice"), "slug", "must match"),
    ("slug too long", BASE.replace("slug: alice", "slug: a" + "b" * 31), "slug", "longer than"),
    ("shell metacharacters in a domain", BASE.replace("[alice.test]", "['alice.test;id']"),
     "domains[0]", "not a valid"),
    ("Cyrillic look-alike domain", BASE.replace(
        "[alice.test]", "[\u0430\u0440\u0440\u04cf\u0435.test]"),
     "domains[0]", "look-alike"),
    ("mixed-script domain", BASE.replace("[alice.test]", "[p\u0430ypal.test]"),
     "domains[0]", "mixes scripts"),
    ("domain not normalised", BASE.replace("[alice.test]", "[Alice.test]"),
     "domains[0]", "not a valid"),
    ("unicode domain not NFC-normalised", BASE.replace("[alice.test]", "[bu\u0308cher.test]"),
     "domains[0]", "normalised"),
    ("duplicate domain", BASE.replace("[alice.test]", "[alice.test, alice.test]"),
     "domains[1]", "listed twice"),
    ("shell metacharacters in an email", BASE.replace("alice@alice.test", "'a`id`@alice.test'"),
     "contact", "characters"),
    ("email without domain", BASE.replace("alice@alice.test", "alice"), "contact",
     "email address"),
    ("10 kB display name", BASE.replace("name: Alice", "name: " + "x" * 10_000), "name",
     "longer than"),
    ("control character in a name", BASE.replace("name: Alice", 'name: "Al\\x1bice"'), "name",
     "control"),
    ("bidi override in a name", BASE.replace("name: Alice", 'name: "Al\\u202eice"'), "name",
     "format character"),
    ("name of the wrong type", BASE.replace("name: Alice", "name: [1, 2]"), "name",
     "must be a string"),
    ("domains of the wrong type", BASE.replace("[alice.test]", "alice.test"), "domains",
     "must be a list"),
    ("unknown top-level key", BASE + "contcat: x@y.test\n", "contcat", "unknown key"),
    ("unknown service", BASE + "services: {mial: {}}\n", "services.mial", "unknown key"),
    ("unknown service setting", BASE + "services: {mail: {quota: 5}}\n",
     "services.mail.quota", "unknown key"),
    ("quota of the wrong type", BASE + "services: {mail: {quota_mb: '5000'}}\n",
     "services.mail.quota_mb", "must be an integer"),
    ("boolean as quota", BASE + "services: {mail: {quota_mb: true}}\n",
     "services.mail.quota_mb", "must be an integer"),
    ("quota above the co-op's allowance", BASE + "services: {mail: {quota_mb: 9000}}\n",
     "services.mail.quota_mb", "allows at most"),
    ("quota above the catalogue's limit", BASE + "services: {mail: {quota_mb: 999999}}\n",
     "services.mail.quota_mb", "at most"),
    ("mailbox name with a slash", BASE + "services: {mail: {mailboxes: ['../x']}}\n",
     "services.mail.mailboxes[0]", "lowercase mail name"),
    ("alias to a missing mailbox", BASE + "services: {mail: {aliases: {info: [bob]}}}\n",
     "services.mail.aliases.info[0]", "not a mailbox"),
    ("vhost on someone else's domain", BASE + "services: {git: {vhost: git.other.test}}\n",
     "services.git.vhost", "member's domains"),
    ("mail without a domain", BASE.replace("[alice.test]", "[]") + "services: {mail: {}}\n",
     "services.mail", "needs the member to have a domain"),
    ("placement of a service not enabled", BASE + "placement: {mail: h1}\n",
     "placement.mail", "not enabled"),
    ("a slug that differs from the file name", BASE.replace("slug: alice", "slug: bob"),
     "slug", "file name"),
    ("unknown status", BASE + "status: deleted\n", "status", "must be one of"),
    ("an SSH key that is not one", BASE + "ssh_keys: ['ssh-rsa $(id)']\n", "ssh_keys[0]",
     "base64"),
]


@pytest.mark.usefixtures("coming_services_available")  # one case has a git vhost
@pytest.mark.parametrize(("why", "text", "field", "problem"), REFUSED,
                         ids=[case[0] for case in REFUSED])
def test_refused(coop: Path, why: str, text: str, field: str, problem: str) -> None:
    with pytest.raises(ValidationError) as caught:
        check(coop, text)
    assert caught.value.file == "members/alice.yml"
    assert caught.value.field == field
    assert problem in caught.value.problem
    assert str(caught.value).startswith(f"members/alice.yml: {field}: ")


def test_unknown_key_suggests_the_nearest() -> None:
    with pytest.raises(ValidationError) as caught:
        check(Path(__file__).resolve().parents[2] / "inventories/lab", BASE + "contcat: x\n")
    assert caught.value.hint == "did you mean 'contact'?"


YAML_ATTACKS = [
    ("duplicate keys", BASE + "name: Mallory\n", "duplicate key"),
    ("anchor bomb", "a: &a [x, x, x, x, x, x, x, x, x]\n"
     "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
     "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
     "e: [*d, *d, *d, *d, *d, *d, *d, *d, *d]\n" + BASE, "aliases are not allowed"),
    ("merge key", "base: &x {name: A}\n<<: *x\n" + BASE, "not allowed"),
    ("not YAML", "slug: [unclosed\n", "not valid YAML"),
    ("huge file", BASE + "# " + "x" * 300_000 + "\n", "larger than"),
    ("python object tag", BASE + "x: !!python/object/apply:os.system ['id']\n",
     "not valid YAML"),
]


@pytest.mark.parametrize(("why", "text", "problem"), YAML_ATTACKS,
                         ids=[case[0] for case in YAML_ATTACKS])
def test_yaml_attacks_refused(coop: Path, why: str, text: str, problem: str) -> None:
    with pytest.raises(ValidationError) as caught:
        check(coop, text)
    assert problem in str(caught.value)


ACCEPTED = [
    ("Jinja in a display name is data", BASE.replace(
        "name: Alice", "name: \"{{ lookup('pipe', 'id') }}\""), "name",
     "{{ lookup('pipe', 'id') }}"),
    ("shell metacharacters in a display name are data", BASE.replace(
        "name: Alice", "name: \"$(rm -rf /); `id` | & > <\""), "name",
     "$(rm -rf /); `id` | & > <"),
    ("an internationalised domain", BASE.replace("[alice.test]", "[bücher.test]"), "domains",
     ("bücher.test",)),
    ("Japanese labels mixing scripts legitimately", BASE.replace("[alice.test]",
                                                                 "[例え.テスト]"),
     "domains", ("例え.テスト",)),
]


@pytest.mark.parametrize(("why", "text", "attribute", "expected"), ACCEPTED,
                         ids=[case[0] for case in ACCEPTED])
def test_accepted(coop: Path, why: str, text: str, attribute: str, expected: object) -> None:
    member = check(coop, text)
    value = getattr(member, attribute)
    if attribute == "domains":
        value = tuple(d.name for d in value)
    assert value == expected


@pytest.mark.usefixtures("coming_services_available")
def test_defaults_applied(coop: Path) -> None:
    member = check(coop, BASE + "services: {mail: {}, nextcloud: {}}\n")
    assert member.services["mail"]["quota_mb"] == 1024
    assert member.services["mail"]["domains"] == ["alice.test"]
    assert member.services["nextcloud"]["vhost"] == "cloud.alice.test"


def test_idna_stores_a_labels_for_dns(coop: Path) -> None:
    member = check(coop, BASE.replace("[alice.test]", "[bücher.test]"))
    assert member.domains[0].ascii == "xn--bcher-kva.test"


def test_slug_length_fits_a_host_account_name(coop: Path) -> None:
    """The host account is m-<slug>; systemd takes account names of at most 31 characters."""
    longest = "a" + "b" * 28
    assert check(coop, BASE.replace("slug: alice", f"slug: {longest}"), longest).slug == longest
    too_long = longest + "c"
    with pytest.raises(ValidationError) as caught:
        check(coop, BASE.replace("slug: alice", f"slug: {too_long}"), too_long)
    assert caught.value.field == "slug"
    assert caught.value.value == too_long
    assert f"m-{too_long}" in caught.value.problem


def test_cli_refuses_a_slug_too_long_for_an_account(coop: Path, cli) -> None:
    slug = "a" * 30
    text = BASE.replace("slug: alice", f"slug: {slug}")
    (coop / "members" / f"{slug}.yml").write_text(text)
    code, _, err = cli("-i", str(coop), "plan")
    assert code == 2
    assert f"members/{slug}.yml: slug: '{slug}'" in err


@pytest.mark.parametrize("inside", ["shop.ada-books.test", "a.b.ada-books.test"])
def test_a_domain_inside_another_members_is_refused(coop: Path, cli, inside: str) -> None:
    """bread-coop may not take a name under ada-books' domain: `dns push` would write its
    records into ada-books' zone, and its mail would answer for names under it."""
    path = coop / "members" / "bread-coop.yml"
    path.write_text(path.read_text().replace("  - bread-coop.test\n",
                                             f"  - bread-coop.test\n  - {inside}\n"))
    before = {p: p.read_bytes() for p in (coop / "members").iterdir()}
    code, _, err = cli("-i", str(coop), "plan")
    assert code == 2, err
    assert "bread-coop.yml" in err and "domains[1]" in err
    assert "inside ada-books.test, a domain of member 'ada-books'" in err
    assert {p: p.read_bytes() for p in (coop / "members").iterdir()} == before


def test_a_members_own_subdomains_are_accepted(coop: Path, cli) -> None:
    path = coop / "members" / "ada-books.yml"
    path.write_text(path.read_text().replace("  - ada-books.test\n",
                                             "  - ada-books.test\n  - shop.ada-books.test\n"))
    code, _, err = cli("-i", str(coop), "plan")
    assert code in (0, 1), err
