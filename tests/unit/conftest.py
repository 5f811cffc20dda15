"""Shared fixtures: a small co-op directory (the lab co-op's registry plus three hosts)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from coophost.registry.catalogue import load_catalogue

REPO = Path(__file__).resolve().parents[2]
HOSTS_YML = """\
all:
  vars: {ansible_user: coophost, ansible_become: true}
  hosts:
    h1:
      {ansible_host: 127.0.0.1, ansible_port: 40001, coophost_fqdn: h1.lab.test,
       coophost_capacity: {ram_mb: 4096, disk_gb: 40}}
    h2:
      {ansible_host: 127.0.0.1, ansible_port: 40002, coophost_fqdn: h2.lab.test,
       coophost_capacity: {ram_mb: 4096, disk_gb: 40}}
    h3:
      {ansible_host: 127.0.0.1, ansible_port: 40003, coophost_fqdn: h3.lab.test,
       coophost_capacity: {ram_mb: 4096, disk_gb: 40}}
  children:
""" + "".join(f"    {group}: {{hosts: {{h1: {{}}, h2: {{}}, h3: {{}}}}}}\n"  # every service's group
              for group in sorted({s.group for s in load_catalogue().services.values()}))


@pytest.fixture
def coop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of inventories/lab's registry with three hosts and a known vault password."""
    root = tmp_path / "coop"
    root.mkdir()
    shutil.copy(REPO / "inventories/lab/coop.yml", root / "coop.yml")
    shutil.copytree(REPO / "inventories/lab/members", root / "members")
    (root / "hosts.yml").write_text(HOSTS_YML)
    monkeypatch.setenv("COOPHOST_VAULT_PASSWORD", "unit-test-vault-password")
    return root


@pytest.fixture
def record_applied():
    """record_applied(coop): state.db says the whole desired state was applied (a deploy's end)."""
    return record_everything_applied


def record_everything_applied(coop: Path) -> None:
    """Record every host's and unit's current hash as applied, as a successful deploy does."""
    from coophost.deploy.jobs import HostJob, fingerprint_jobs
    from coophost.desired.units import compute
    from coophost.registry.loader import load_registry
    from coophost.state import StateDB

    desired = compute(coop)
    jobs = {h: HostJob(h, host_hash=digest) for h, digest in desired.host_hashes.items()}
    for unit in desired.units.values():
        jobs[unit.host].units.append((unit.member, unit.service, unit.hash))
    fingerprint_jobs(jobs, load_registry(coop), desired.role_versions)
    with StateDB(coop) as state:
        for host, job in jobs.items():
            state.record_host_applied(host, job.host_hash, job.units, settings=job.settings,
                                      level=desired.host_levels[host])


@pytest.fixture
def cli():
    """Run the CLI in-process: cli(*args) -> (exit code, stdout, stderr)."""
    return run


def run(*args: str) -> tuple[int, str, str]:
    """Run the CLI in-process; return (exit code, stdout, stderr)."""
    import contextlib
    import io

    from coophost.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def coming_services_available(monkeypatch: pytest.MonkeyPatch) -> None:
    """Treat the catalogue's coming services (no role yet) as available.

    For tests of generic mechanisms (vhosts, requests, ceilings, secrets) that need a service
    with settings mail lacks; the refusal of coming services is tested without this.
    """
    from coophost.registry.catalogue import Service

    monkeypatch.setattr(Service, "available", property(lambda self: True))


@pytest.fixture
def mail_with_a_database(monkeypatch: pytest.MonkeyPatch) -> None:
    """Give the mail service a PostgreSQL database (`data.dumps`), as a Nextcloud unit has.

    For tests of what a unit with databases changes (backups, moves) before an available
    service has one. The cached catalogue is copied, never changed in place.
    """
    import dataclasses

    import coophost.registry.loader as loader

    real = loader.load_catalogue

    def with_a_database():  # type: ignore[no-untyped-def]
        catalogue = real()
        mail = catalogue.services["mail"]
        data = {**mail.data, "dumps": [{"kind": "database", "engine": "postgresql",
                                         "name": "mail_{owner}"}]}
        return dataclasses.replace(catalogue, services={
            **catalogue.services, "mail": dataclasses.replace(mail, data=data)})

    monkeypatch.setattr(loader, "load_catalogue", with_a_database)
