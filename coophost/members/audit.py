"""The co-op's audit log (audit.log, one JSON event per line) and who and when an event is."""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from coophost.layout import AUDIT_LOG
from coophost.registry import checks


def now() -> str:
    """The current UTC time, to the second, in ISO 8601."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def actor() -> str:
    """Who runs this command: $COOPHOST_ACTOR, else the login name."""
    name = os.environ.get("COOPHOST_ACTOR") or getpass.getuser()
    return checks.text(name, "(environment)", "COOPHOST_ACTOR", 100)


def audit(root: Path, event: Mapping[str, Any]) -> None:
    """Append one event (with its time) to audit.log, synced before returning."""
    line = json.dumps({"at": now(), **event}, sort_keys=True, ensure_ascii=False) + "\n"
    fd = os.open(root / AUDIT_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def read_audit(root: Path) -> list[dict[str, Any]]:
    """Every audit event, oldest first."""
    path = root / AUDIT_LOG
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
