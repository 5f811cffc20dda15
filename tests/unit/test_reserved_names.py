"""Names a member may never claim: the co-op's domain, its hosts' names, the lab's domain."""

from __future__ import annotations

from pathlib import Path

import pytest

# Vhosts (nextcloud, git) are still coming services: treated as available here.
pytestmark = pytest.mark.usefixtures("coming_services_available")

MEMBER = """\
slug: {slug}
name: Mallory
contact: mallory@mallory.test
domains: {domains}
services: {services}
"""


def write_member(coop: Path, slug: str, domains: str = "[mallory.test]",
                 services: str = "{}") -> Path:
    path = coop / "members" / f"{slug}.yml"
    path.write_text(MEMBER.format(slug=slug, domains=domains, services=services))
    return path


def set_host_fqdn(coop: Path, host: str, fqdn: str) -> None:
    text = (coop / "hosts.yml").read_text()
    (coop / "hosts.yml").write_text(text.replace(f"coophost_fqdn: {host}.lab.test",
                                                 f"coophost_fqdn: {fqdn}"))


REFUSED = [
    # (why, domains, services, hosts.yml change, field, value, words of the problem)
    ("the co-op's own domain", "[lab.test]", "{}", None, "domains[0]", "lab.test",
     "co-op's own domain"),
    ("a name under the co-op's domain", "[shop.lab.test]", "{}", None, "domains[0]",
     "shop.lab.test", "under the co-op's own domain"),
    ("a domain above the co-op's", "[lab.test, mallory.test]", "{}", None, "domains[0]",
     "lab.test", "co-op's own domain"),
    ("a host's name", "[mx1.hosting.example]", "{}", ("h1", "mx1.hosting.example"),
     "domains[0]", "mx1.hosting.example", "name of host 'h1'"),
    ("a name under a host's name", "[www.mx1.hosting.example]", "{}",
     ("h1", "mx1.hosting.example"), "domains[0]", "www.mx1.hosting.example",
     "under the name of host 'h1'"),
    ("the domain holding a host's name", "[hosting.example]", "{}",
     ("h1", "mx1.hosting.example"), "domains[0]", "hosting.example",
     "holds the name of host 'h1'"),
    ("a vhost on a host's name", "[mallory.test]",
     "{git: {vhost: git.mx1.hosting.example}}", ("h1", "mx1.hosting.example"),
     "services.git.vhost", "git.mx1.hosting.example", "must be one of the member's domains"),
]


@pytest.mark.parametrize(("why", "domains", "services", "host", "field", "value", "problem"),
                         REFUSED, ids=[case[0] for case in REFUSED])
def test_refused(coop: Path, cli, why: str, domains: str, services: str,
                 host: tuple[str, str] | None, field: str, value: str, problem: str) -> None:
    if host is not None:
        set_host_fqdn(coop, *host)
    write_member(coop, "mallory", domains, services)
    code, _, err = cli("-i", str(coop), "plan")
    assert code == 2, err
    assert f"members/mallory.yml: {field}: {value!r}: " in err
    assert problem in err


def test_fallback_address_that_is_a_host_name_is_refused(coop: Path, cli) -> None:
    """A member named like a host gets `<slug>.cloud.<co-op domain>` as its fallback vhost."""
    set_host_fqdn(coop, "h2", "h2.cloud.lab.test")
    write_member(coop, "h2", "[]", "{nextcloud: {}}")
    code, _, err = cli("-i", str(coop), "plan")
    assert code == 2, err
    assert "members/h2.yml: services.nextcloud.vhost: 'h2.cloud.lab.test': " in err
    assert "name of host 'h2'" in err


@pytest.mark.parametrize(("domain", "problem"), [
    ("acme.lab9.test", "is the lab's acme server"),
    ("dns.lab9.test", "is the lab's dns server"),
    ("shop.lab9.test", "is under the lab's domain"),
    ("mallory.lab9.test", "is under the lab's domain"),
])
def test_lab_names_are_reserved(coop: Path, cli, domain: str, problem: str) -> None:
    """In a lab, the lab's domain and its DNS and ACME servers' names are nobody's."""
    text = (coop / "hosts.yml").read_text()
    (coop / "hosts.yml").write_text(text.replace(
        "vars: {", "vars: {coophost_lab_domain: lab9.test, "))
    write_member(coop, "mallory", f"[{domain}]")
    code, _, err = cli("-i", str(coop), "plan")
    assert code == 2, err
    assert f"members/mallory.yml: domains[0]: {domain!r}: " in err
    assert problem in err


def test_own_fallback_address_is_accepted(coop: Path, cli) -> None:
    write_member(coop, "mallory", "[]", "{nextcloud: {}}")
    code, out, err = cli("-i", str(coop), "plan")
    assert code in (0, 1), err
    assert "mallory" in out


def test_a_new_host_name_already_claimed_is_refused_after_a_cached_plan(coop: Path,
                                                                       cli) -> None:
    """hosts.yml changing under unchanged member files is checked again, not taken from cache."""
    write_member(coop, "mallory", "[mallory.test, mx9.hosting.example]")
    code, _, err = cli("-i", str(coop), "plan")
    assert code in (0, 1), err
    set_host_fqdn(coop, "h3", "mx9.hosting.example")
    code, _, err = cli("-i", str(coop), "plan")
    assert code == 2, err
    assert "members/mallory.yml: domains[1]: 'mx9.hosting.example': " in err
    assert "name of host 'h3'" in err


def test_member_add_refuses_a_host_name(coop: Path, cli) -> None:
    set_host_fqdn(coop, "h1", "mx1.hosting.example")
    code, _, err = cli("-i", str(coop), "member", "add", "mallory", "--name", "Mallory",
                       "--contact", "m@mallory.test", "--domain", "mx1.hosting.example")
    assert code == 2, err
    assert "domains[0]: 'mx1.hosting.example': is the name of host 'h1'" in err
    assert not (coop / "members" / "mallory.yml").exists()
