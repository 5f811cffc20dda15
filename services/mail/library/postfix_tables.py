#!/usr/bin/python3
"""Write postfix texthash tables in one task, checked, atomically, with a diff per table."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: postfix_tables
short_description: Write postfix texthash tables in one task, each checked and put in atomically
description:
  - Takes every table's whole text (for example rendered with
    C(lookup('ansible.builtin.template', ...))) and makes the files in O(dir) hold it.
  - Only the tables whose text (or owner, group or mode) differs are written. Each is staged as
    a temporary file in O(dir), checked with C(postmap -s texthash:STAGED) (a non-zero exit or
    any warning refuses it), and only when every staged table passed are they moved into place,
    each by an atomic rename; a bad table never replaces a good one and nothing is moved in.
  - Each staged table is dated O(cooled) seconds back before it is moved in. postfix's texthash
    reader treats a file modified within the last second or two as still being written and
    re-reads it every 0.3 s until it has cooled down, so a freshly written table would make
    postmap's check and every daemon that opens it after a reload wait up to 2 s. No process
    sees a table here before it is whole (it is renamed in complete), so that guard has
    nothing to protect.
  - Tables in O(dir) that are not in O(tables) are left alone.
  - Returns one diff per changed table (a list), so C(--diff) shows each, and the names of the
    changed tables in RV(changed_items), in the same order; on failure the refused tables in
    RV(failed_items).
version_added: "1.0.0"
author: coophost
options:
  dir:
    description: The folder the tables live in (it must exist).
    type: path
    required: true
  tables:
    description:
      - Each table's file name (lower case letters and underscores) and its whole text.
    type: dict
    required: true
  owner:
    description: Owner every written table gets.
    type: str
    default: root
  group:
    description: Group every written table gets.
    type: str
    default: root
  mode:
    description: Mode every written table gets, an octal string.
    type: str
    default: "0644"
  postmap:
    description: The postmap command that checks each staged table.
    type: path
    default: /usr/sbin/postmap
  cooled:
    description: Seconds in the past each written table's modification time is set to.
    type: int
    default: 3
attributes:
  check_mode:
    support: full
    description: Reports which tables would change and their diffs; writes nothing.
  diff_mode:
    support: full
    description: One before/after diff per changed table.
notes:
  - Check mode does not run postmap (nothing is staged).
"""

EXAMPLES = r"""
- name: Write the postfix tables
  postfix_tables:
    dir: /etc/postfix/coophost
    tables:
      domains: "{{ lookup('ansible.builtin.template', 'domains.j2') }}"
      aliases: "{{ lookup('ansible.builtin.template', 'aliases.j2') }}"
  notify: Reload postfix
"""

RETURN = r"""
changed_items:
  description: The tables written (or, in check mode, that would be), sorted by name.
  returned: always
  type: list
  elements: str
  sample: [aliases, senders]
failed_items:
  description: The tables postmap refused (then nothing was moved in).
  returned: failure
  type: list
  elements: str
  sample: [aliases]
diff:
  description: One before/after pair per changed table, in the order of RV(changed_items).
  returned: changed and diff mode
  type: list
  elements: dict
"""

import grp  # noqa: E402
import os  # noqa: E402
import pwd  # noqa: E402
import re  # noqa: E402
import stat  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402

NAME = re.compile(r"^[a-z][a-z_]{0,62}$")
Runner = Callable[[list[str]], tuple[int, str, str]]


class TableError(Exception):
    """A table postmap refused; nothing was moved in."""

    def __init__(self, names: list[str], message: str) -> None:
        super().__init__(message)
        self.names = names


def current(path: str) -> tuple[str | None, os.stat_result | None]:
    """The text of the file at `path` and its stat, or (None, None) when there is none."""
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            text = handle.read()
            return text, os.fstat(handle.fileno())
    except FileNotFoundError:
        return None, None
    except UnicodeDecodeError:
        return "", os.stat(path)


def differing(tables: dict[str, str], folder: str, uid: int, gid: int,
              mode: int) -> list[tuple[str, str]]:
    """(name, text in place) of each table whose file is missing or differs, sorted by name."""
    found = []
    for name in sorted(tables):
        text, info = current(os.path.join(folder, name))
        if text == tables[name] and info is not None and info.st_uid == uid \
                and info.st_gid == gid and stat.S_IMODE(info.st_mode) == mode:
            continue
        found.append((name, text or ""))
    return found


def stage(folder: str, name: str, text: str, uid: int, gid: int, mode: int,
          cooled: int) -> str:
    """Write `text` to a new temporary file beside `name`; its path.

    The file gets its owner, group and mode, is fsynced and dated `cooled` seconds back.
    """
    fd, temp = tempfile.mkstemp(dir=folder, prefix=f".tmp-{name}-")
    try:
        os.fchmod(fd, mode)
        if (os.fstat(fd).st_uid, os.fstat(fd).st_gid) != (uid, gid):
            os.fchown(fd, uid, gid)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            then = time.time() - cooled
            os.utime(handle.fileno(), (then, then))
            os.fsync(handle.fileno())
    except BaseException:
        os.unlink(temp)
        raise
    return temp


def check(run: Runner, postmap: str, path: str) -> str:
    """What postmap says is wrong with the table at `path` ("" when nothing).

    `run` is AnsibleModule.run_command (an argument list, never a shell).
    """
    code, _, err = run([postmap, "-s", f"texthash:{path}"])
    if code != 0 or "warning:" in err:
        return err.strip() or f"postmap exited {code}"
    return ""


def install(tables: dict[str, str], folder: str, names: list[str], run: Runner, postmap: str,
            uid: int, gid: int, mode: int, cooled: int) -> None:
    """Stage, check, then move in the tables `names`; TableError (nothing moved) on a refusal."""
    staged: dict[str, str] = {}
    try:
        for name in names:
            staged[name] = stage(folder, name, tables[name], uid, gid, mode, cooled)
        refused = [(name, problem) for name, temp in staged.items()
                   for problem in [check(run, postmap, temp)] if problem]
        if refused:
            said = "; ".join(f"{name}: {problem}" for name, problem in refused)
            raise TableError([name for name, _ in refused],
                             f"postfix table(s) {', '.join(n for n, _ in refused)} failed to "
                             f"validate with {postmap} -s texthash:, nothing replaced: {said}")
        for name, temp in staged.items():
            os.replace(temp, os.path.join(folder, name))
        staged.clear()
    finally:
        for temp in staged.values():
            os.unlink(temp)
    if names:
        directory = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def main() -> None:
    """The module: bad arguments fail before anything is written."""
    module = AnsibleModule(
        argument_spec={
            "dir": {"type": "path", "required": True},
            "tables": {"type": "dict", "required": True},
            "owner": {"type": "str", "default": "root"},
            "group": {"type": "str", "default": "root"},
            "mode": {"type": "str", "default": "0644"},
            "postmap": {"type": "path", "default": "/usr/sbin/postmap"},
            "cooled": {"type": "int", "default": 3},
        },
        supports_check_mode=True,
    )
    params = module.params
    folder, tables = params["dir"], params["tables"]
    if not os.path.isdir(folder):
        module.fail_json(msg=f"dir: {folder} is not a folder")
    for name, text in tables.items():
        if not NAME.match(str(name)):
            module.fail_json(msg=f"tables: bad table name {name!r} (lower case letters and _)")
        if not isinstance(text, str):
            module.fail_json(msg=f"tables: {name}: the text must be a string")
    try:
        mode = int(params["mode"], 8)
    except ValueError:
        module.fail_json(msg=f"mode: {params['mode']!r} is not an octal mode")
    if mode & ~0o7777 or params["cooled"] < 0:
        module.fail_json(msg=f"mode {params['mode']!r} or cooled {params['cooled']} out of range")
    try:
        uid = pwd.getpwnam(params["owner"]).pw_uid
        gid = grp.getgrnam(params["group"]).gr_gid
    except KeyError as err:
        module.fail_json(msg=f"owner/group: no such user or group: {err}")

    found = differing(tables, folder, uid, gid, mode)
    names = [name for name, _ in found]
    result: dict[str, Any] = {"changed": bool(found), "changed_items": names}
    if module._diff and found:
        result["diff"] = [{"before": before, "after": tables[name],
                           "before_header": os.path.join(folder, name),
                           "after_header": os.path.join(folder, name)}
                          for name, before in found]
    if found and not module.check_mode:
        try:
            install(tables, folder, names, module.run_command, params["postmap"], uid, gid,
                    mode, params["cooled"])
        except TableError as err:
            module.fail_json(msg=str(err), failed_items=err.names, changed=False)
        except OSError as err:
            module.fail_json(msg=f"writing the tables in {folder}: {err}", changed=False)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
