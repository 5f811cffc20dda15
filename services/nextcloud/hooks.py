"""The nextcloud service's hooks: what its coophost.yml cannot say (see coophost.services).

Loaded by the catalogue from this folder as module `coophost_service_nextcloud`.
"""

from __future__ import annotations

from typing import Any

from coophost.services import DefaultHooks, ProbeResult


class NextcloudHooks(DefaultHooks):
    """The lab probe: each instance's preflight page over TLS, from the member's own pool."""

    # PHP, PostgreSQL and Redis on two lab hosts (h1, h2) rather than on every one: two, so
    # that a lab host's evacuation has somewhere to bring a Nextcloud back to.
    lab_hosts = 2

    def probe(self, lab: Any, timeout: float) -> ProbeResult | None:
        """`coophost lab probe`: every active member's instance answers from its own pool."""
        from coophost.lab.nextcloudprobe import prove

        return prove(lab, timeout)


HOOKS = NextcloudHooks()
