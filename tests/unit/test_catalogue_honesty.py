"""Honest catalogue: a service without a role is "coming", and no member can have it."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from coophost.members.requests import load_requests
from coophost.members.shell import run
from coophost.registry.catalogue import load_catalogue

COMING = tuple(sorted(n for n, s in load_catalogue().services.items() if not s.available))
AVAILABLE = tuple(sorted(n for n, s in load_catalogue().services.items() if s.available))


def test_the_catalogue_says_what_is_available_and_what_is_coming() -> None:
    """Available: its folder is a role (tasks/main.yml). Coming: no role yet, or one being
    built that no playbook deploys."""
    services = load_catalogue().services
    root = Path(__file__).resolve().parents[2]
    for name, service in services.items():
        assert service.folder is not None
        if service.available:
            assert (service.folder / "tasks" / "main.yml").is_file(), name
        else:
            assert not (root / "playbooks" / "stages" / f"{name}.yml").exists(), name
            assert not (root / "playbooks" / f"{name}.yml").exists(), name
    assert COMING and "mail" in AVAILABLE


def test_service_list_says_available_and_coming(coop: Path, cli) -> None:
    code, out, err = cli("-i", str(coop), "service", "list")
    assert code == 0, err
    assert "mail (available" in out
    for name in COMING:
        assert f"{name} (coming: no role deploys it yet" in out
    code, out, err = cli("-i", str(coop), "service", "list", "--json")
    assert {name: s["status"] for name, s in json.loads(out).items()} == {
        **dict.fromkeys(AVAILABLE, "available"), **dict.fromkeys(COMING, "coming")}


@pytest.mark.parametrize("service", COMING)
def test_a_member_file_cannot_list_a_coming_service(coop: Path, cli, service: str) -> None:
    path = coop / "members" / "ada-books.yml"
    path.write_text(path.read_text().replace("services:\n", f"services:\n  {service}: {{}}\n"))
    code, _, err = cli("-i", str(coop), "plan")
    assert code == 2, err
    assert f"members/ada-books.yml: services.{service}: '{service}': this service is coming" in err
    assert f"available now: {', '.join(AVAILABLE)}" in err


@pytest.mark.parametrize("service", COMING)
def test_a_coming_service_cannot_be_enabled(coop: Path, cli, service: str) -> None:
    before = (coop / "members" / "ada-books.yml").read_bytes()
    code, _, err = cli("-i", str(coop), "service", "enable", "ada-books", service)
    assert code == 2
    assert "this service is coming, not offered yet" in err
    assert (coop / "members" / "ada-books.yml").read_bytes() == before


def test_a_coming_service_cannot_be_requested(coop: Path, cli) -> None:
    code, _, err = cli("-i", str(coop), "requests", "file", "ada-books", COMING[0])
    assert code == 2
    assert "this service is coming" in err
    out = io.BytesIO()
    assert run(coop, "ada-books", f"request {COMING[0]}", out) == 2
    assert load_requests(coop) == []


def test_the_member_shell_lists_coming_services_apart(coop: Path) -> None:
    coop_file = coop / "coop.yml"  # the co-op allows every coming service too
    allowed = "    nextcloud: {quota_gb: 20, max_users: 20}\n"
    assert allowed in coop_file.read_text()
    coop_file.write_text(coop_file.read_text().replace(
        allowed, allowed + "".join(f"    {name}: {{}}\n" for name in COMING)))
    out = io.BytesIO()
    assert run(coop, "ada-books", "services", out) == 0
    text = out.getvalue().decode()
    assert "mail: " in text and "nextcloud: " in text
    assert f"{COMING[0]}: " not in text
    assert f"coming (not offered yet): {', '.join(COMING)}" in text
