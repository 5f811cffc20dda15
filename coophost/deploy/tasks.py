"""What each task did on a host, from ansible-runner's events. Pure.

The changed and failed tasks a run records, and in check mode the diff each change would make.
A module that writes several things in one task may name them as a loop's items would be:
`changed_items` (a list of names; with `diff` a list of as many parts, part i is item i's)
gives one record per item, `failed_items` the items a failure names (services/mail's
postfix_tables does both). Nothing from a task with `no_log` is kept but its name (and role):
ansible-runner censors its result to `{"censored": ...}`, and the only other thing read is
whether Ansible displayed it as "changed" (the first word of the event's stdout, which no_log
leaves). A diff is never stored; in a diff, any line that looks like it holds a secret is
masked.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from coophost.desired.settings import SENSITIVE

MAX_TASKS = 200  # task records kept per host job; the rest are counted, not kept
MAX_MESSAGE = 500  # characters of a failed task's message kept
MAX_DIFF_LINES = 400  # lines of one task's diff shown; the rest are counted
NO_LOG_MESSAGE = "(output hidden: no_log)"
NO_LOG_DIFF = "(diff hidden: no_log)"
MASKED_LINE = "(hidden: looks like a secret)"

# A line of a diff that may hold a secret: a secret-like word (settings.SENSITIVE, and `key`),
# a PEM block, a crypt/argon2 hash, or a long run of base64 mixing cases and digits.
SECRET_WORD = re.compile(
    rf"{SENSITIVE.pattern}|key|-----BEGIN|\{{[A-Z0-9-]*CRYPT\}}|\$(argon2(id|i|d)?|2[aby]?|[156]|y)\$",
    re.IGNORECASE)
BASE64_RUN = re.compile(r"[A-Za-z0-9+/=_-]{32,}")
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

CHANGED, FAILED, UNREACHABLE = "changed", "failed", "unreachable"
OK_EVENTS = ("runner_on_ok", "runner_item_on_ok")
FAIL_EVENTS = {"runner_on_failed": FAILED, "runner_on_unreachable": UNREACHABLE}


@dataclass(frozen=True)
class TaskRecord:
    """A task that changed or failed on a host (one per changed loop item).

    `diff` (check mode only) is what the change would be, rendered and masked; it is never
    stored. `message` is only for a failure.
    """

    role: str
    task: str
    item: str
    status: str  # changed, failed, unreachable
    message: str = ""
    diff: str = field(default="", compare=False)

    def stored(self) -> dict[str, str]:
        """What state.db keeps and `runs show --json` gives: everything but the diff."""
        return {"role": self.role, "task": self.task, "item": self.item,
                "status": self.status, "message": self.message}

    def label(self) -> str:
        """`role : task (item)`, as a line of `runs show` or a diff's heading."""
        name = f"{self.role} : {self.task}" if self.role else self.task
        return f"{name} ({self.item})" if self.item else name


def censored(res: Mapping[str, Any]) -> bool:
    """Whether a task result was hidden by no_log."""
    return "censored" in res or bool(res.get("_ansible_no_log"))


def failure_message(res: Mapping[str, Any], limit: int = 300) -> str:
    """What a failed task said: its message, or those of a loop's failed items."""
    if censored(res):
        return NO_LOG_MESSAGE
    results = res.get("results")
    if isinstance(results, list):
        said = [str(r.get("msg", "")) for r in results
                if isinstance(r, dict) and r.get("failed") and not censored(r)]
        if any(said):
            return "; ".join(dict.fromkeys(s for s in said if s))[:limit]
    return str(res.get("msg", ""))[:limit]


def item_label(res: Mapping[str, Any]) -> str:
    """A short name of the loop item(s) a task result names, or "" (none, or hidden).

    A string item as it is; a mapping by its member's slug or its `name`; items of a loop's
    failed results joined. Results hidden by no_log carry no item.
    """
    def one(item: object) -> str:
        if isinstance(item, str):
            return item[:100]
        if isinstance(item, dict):
            member = item.get("member")
            if isinstance(member, dict) and isinstance(member.get("slug"), str):
                return str(member["slug"])
            for key in ("slug", "name"):
                if isinstance(item.get(key), str):
                    return str(item[key])[:100]
        return ""

    if censored(res):
        return ""
    named = _names(res.get("failed_items"))
    if named:
        return ", ".join(name[:100] for name in named)[:300]
    if "item" in res:
        return one(res["item"])
    results = res.get("results")
    if isinstance(results, list):
        return ", ".join(label for r in results if isinstance(r, dict) and r.get("failed")
                         and not censored(r) for label in [one(r.get("item"))] if label)[:300]
    return ""


def _names(value: object) -> list[str]:
    """A module's `changed_items`/`failed_items`: its names, or [] when it is not such a list."""
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return value
    return []


def _shown_changed(res: Mapping[str, Any], stdout: str) -> bool:
    """Whether a task result changed something; for a censored one, what Ansible displayed."""
    if censored(res):
        return ANSI.sub("", stdout).lstrip().startswith("changed:")
    return res.get("changed") is True


def mask_line(line: str) -> str:
    """A diff line, or its +/-/space prefix and MASKED_LINE when it looks like a secret."""
    if line.startswith(("---", "+++", "@@")) or not line:
        return line
    if line[0] in "+- ":
        return f"{line[0]}{MASKED_LINE}" if looks_secret(line[1:]) else line
    return MASKED_LINE if looks_secret(line) else line


def looks_secret(text: str) -> bool:
    """Whether a line may hold a secret: a secret-like word, or a long random-looking run."""
    if SECRET_WORD.search(text):
        return True
    return any(re.search(r"[a-z]", run) and re.search(r"[A-Z]", run) and re.search(r"\d", run)
               for run in BASE64_RUN.findall(text))


def render_diff(diff: object) -> str:
    """A task result's `diff` (a mapping or a list of them) as unified diff text, masked.

    Each part has `before`/`after` (text, or data shown as JSON) with optional headers, or
    text Ansible already `prepared`. Empty when there is nothing to show.
    """
    parts = diff if isinstance(diff, list) else [diff]
    lines: list[str] = []
    for part in parts:
        if not isinstance(part, Mapping):
            continue
        if part.get("src_binary") or part.get("dst_binary"):
            lines.append("(binary file, not shown)")
        elif part.get("src_larger") or part.get("dst_larger"):
            lines.append("(file too large to diff, not shown)")
        elif "prepared" in part:
            lines += str(part["prepared"]).splitlines()
        elif "before" in part or "after" in part:
            before, after = _text(part.get("before", "")), _text(part.get("after", ""))
            old = str(part.get("before_header", "") or "")
            new = str(part.get("after_header", "") or "")
            lines += [line.rstrip("\n") for line in difflib.unified_diff(
                before.splitlines(keepends=True), after.splitlines(keepends=True),
                fromfile=f"before: {old}" if old else "before",
                tofile=f"after: {new}" if new else "after", n=3)]
    masked = [mask_line(ANSI.sub("", line)) for line in lines]
    if len(masked) > MAX_DIFF_LINES:
        masked = [*masked[:MAX_DIFF_LINES], f"... ({len(masked) - MAX_DIFF_LINES} more lines)"]
    return "\n".join(masked)


def _text(value: object) -> str:
    """A before/after value as text: data as sorted, indented JSON, as Ansible shows it."""
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=4, sort_keys=True, default=str) + "\n"


def task_record(kind: str, data: Mapping[str, Any], stdout: str = "",
                with_diff: bool = False) -> TaskRecord | None:
    """The record of one runner event, or None (a task that neither changed nor failed).

    `kind`: the event's name; `data`: its event_data; `stdout`: the text Ansible displayed for
    it (read only for whether a censored result changed). A failure ignored by
    `ignore_errors` is no failure. `with_diff`: render the result's diff (check mode).
    """
    res = data.get("res")
    res = res if isinstance(res, Mapping) else {}
    role, task = str(data.get("role") or ""), str(data.get("task") or "")
    if kind in FAIL_EVENTS:
        if data.get("ignore_errors"):
            return None
        return TaskRecord(role, task, item_label(res), FAIL_EVENTS[kind],
                          failure_message(res, MAX_MESSAGE))
    if kind not in OK_EVENTS or not _shown_changed(res, stdout):
        return None
    if censored(res):
        return TaskRecord(role, task, "", CHANGED, diff=NO_LOG_DIFF if with_diff else "")
    label = res.get("_ansible_item_label")
    item = label[:100] if isinstance(label, str) else item_label(res)
    return TaskRecord(role, task, item, CHANGED,
                      diff=render_diff(res.get("diff")) if with_diff else "")


def task_records(kind: str, data: Mapping[str, Any], stdout: str = "",
                 with_diff: bool = False) -> list[TaskRecord]:
    """The records of one runner event: task_record's, or one per changed item.

    A changed task whose result names its `changed_items` gives one record per item, each with
    its own part of a `diff` list (or, when the parts do not match the names, the first record
    with the whole diff).
    """
    record = task_record(kind, data, stdout, with_diff)
    if record is None:
        return []
    res = data.get("res")
    res = res if isinstance(res, Mapping) else {}
    names = _names(res.get("changed_items"))
    if record.status != CHANGED or censored(res) or not names:
        return [record]
    diff = res.get("diff")
    parts = diff if isinstance(diff, list) and len(diff) == len(names) else None
    return [TaskRecord(record.role, record.task, name[:100], CHANGED,
                       diff=render_diff(parts[n]) if with_diff and parts else
                       record.diff if with_diff and n == 0 else "")
            for n, name in enumerate(names)]


@dataclass
class TaskLog:
    """The task records of one host's job, fed its events in order, at most `limit` kept.

    A loop reports each item, then the whole task: the whole task is recorded only when no
    item was (a loop hidden by no_log reports its items' changes, not the whole task's).
    """

    with_diff: bool = False
    limit: int = MAX_TASKS
    records: list[TaskRecord] = field(default_factory=list)
    omitted: int = 0
    _itemized: set[str] = field(default_factory=set)

    def add(self, kind: str, data: Mapping[str, Any], stdout: str = "") -> None:
        """Take one event of this host."""
        uuid = str(data.get("task_uuid") or data.get("task") or "")
        if kind == "runner_on_ok" and uuid in self._itemized:
            return
        records = task_records(kind, data, stdout, self.with_diff)
        if records and kind == "runner_item_on_ok":
            self._itemized.add(uuid)
        for record in records:
            if len(self.records) < self.limit:
                self.records.append(record)
            else:
                self.omitted += 1


def check_report(records: list[TaskRecord], omitted: int = 0) -> str:
    """What a check run would do on one host: each changed task with its diff, each failure.

    A change whose module shows no diff says so; nothing to change says that.
    """
    blocks: list[str] = []
    for record in records:
        if record.status == CHANGED:
            body = record.diff or "(changed; the module shows no diff)"
            blocks.append(f"changed: {record.label()}\n{body}")
        else:
            blocks.append(f"{record.status}: {record.label()}: {record.message}")
    if omitted:
        blocks.append(f"... and {omitted} more tasks, not shown")
    return "\n\n".join(blocks) if blocks else "(nothing would change)"
