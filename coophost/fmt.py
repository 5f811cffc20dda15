"""How coophost shows a moment to a person: one format everywhere (UTC, to the minute).

Tables and messages of every command (runs, requests, the member shell's backups) use
`when`, so that one co-op's times read alike wherever they appear. JSON output keeps the
raw values (Unix times, ISO 8601 strings).
"""

from __future__ import annotations

import datetime as dt

FORMAT = "%Y-%m-%d %H:%M UTC"


def when(moment: float | str | dt.datetime | None) -> str:
    """`moment` as "YYYY-MM-DD HH:MM UTC"; "" for none.

    `moment` is a Unix time, an ISO 8601 string (a `Z` suffix allowed; one without a zone is
    taken as UTC) or a datetime. Text that is not ISO 8601 is returned as it is.
    """
    if moment is None or moment == "":
        return ""
    if isinstance(moment, str):
        try:
            parsed = dt.datetime.fromisoformat(moment.replace("Z", "+00:00"))
        except ValueError:
            return moment
        moment = parsed
    if isinstance(moment, dt.datetime):
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)
        return moment.astimezone(dt.UTC).strftime(FORMAT)
    return dt.datetime.fromtimestamp(moment, dt.UTC).strftime(FORMAT)
