"""Reading registry YAML safely and fast, and writing it back without losing a person's edits.

Reads use PyYAML's C loader (a 10,000-member co-op must parse in seconds) with duplicate keys
refused and anchors/aliases refused (they have no use in a member file and enable "billion
laughs" bombs). Writes use ruamel.yaml's round-trip mode so comments and key order survive.

Both speak one dialect, YAML 1.2's core schema (ruamel.yaml's): `on`, `yes`, `no` and `off`
are strings, only true/false are booleans, `010` is ten and `1:30` is text. PyYAML alone
would read YAML 1.1, where a mailbox written as `on` comes back as the boolean true.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any, ClassVar

import yaml

from coophost.errors import ValidationError

MAX_FILE_BYTES = 256 * 1024

_Loader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _DuplicateKey(Exception):
    def __init__(self, key: object, line: int) -> None:
        super().__init__(key)
        self.key = key
        self.line = line


class _AliasUsed(Exception):
    def __init__(self, line: int) -> None:
        super().__init__(line)
        self.line = line


class _StrictLoader(_Loader):  # type: ignore[misc, valid-type]
    """A safe loader of YAML 1.2's core schema that refuses duplicate keys and YAML aliases."""

    yaml_implicit_resolvers: ClassVar[dict[str, list[tuple[str, re.Pattern[str]]]]] = {}

    def construct_yaml_int(self, node: Any) -> int:
        """A YAML 1.2 integer as ruamel.yaml reads it: 0b, 0o, 0x, else decimal (`010` is 10)."""
        value = str(self.construct_scalar(node)).replace("_", "")
        sign = -1 if value.startswith("-") else 1
        digits = value.lstrip("+-")
        for prefix, base in (("0b", 2), ("0o", 8), ("0x", 16)):
            if digits.startswith(prefix):
                return sign * int(digits[2:], base)
        return sign * int(digits, 10)

    def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise _AliasUsed(key_node.start_mark.line + 1)
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, list | dict):
                key = repr(key)
            if key in seen:
                raise _DuplicateKey(key, key_node.start_mark.line + 1)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)  # type: ignore[no-any-return]

    def construct_lenient_timestamp(self, node: Any) -> Any:
        """A date or time; or, for an impossible one (2024-13-45), the text as written.

        The field's own check then refuses it by name: never a crash of the parser.
        """
        try:
            return self.construct_yaml_timestamp(node)
        except (ValueError, OverflowError):
            return self.construct_scalar(node)

    def construct_lenient_int(self, node: Any) -> Any:
        """An integer, or (too many digits to convert) the text as written, refused by name."""
        try:
            return self.construct_yaml_int(node)
        except (ValueError, OverflowError):
            return self.construct_scalar(node)


_StrictLoader.add_constructor("tag:yaml.org,2002:timestamp",
                              _StrictLoader.construct_lenient_timestamp)
_StrictLoader.add_constructor("tag:yaml.org,2002:int", _StrictLoader.construct_lenient_int)


# The implicit types of ruamel.yaml's YAML 1.2 resolver (what its round-trip mode reads and
# writes), but `=`, which is text here; `<<` is kept so that merge keys can be refused.
for _tag, _pattern, _first in (
    ("bool", r"^(?:true|True|TRUE|false|False|FALSE)$", list("tTfF")),
    ("float", r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                  |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                  |[-+]?\.[0-9_]+(?:[eE][-+][0-9]+)?
                  |[-+]?\.(?:inf|Inf|INF)
                  |\.(?:nan|NaN|NAN))$""", list("-+0123456789.")),
    ("int", r"^(?:[-+]?0b[0-1_]+|[-+]?0o?[0-7_]+|[-+]?[0-9_]+|[-+]?0x[0-9a-fA-F_]+)$",
     list("-+0123456789")),
    ("merge", r"^(?:<<)$", ["<"]),
    ("null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
    ("timestamp", r"""^(?:[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]
                      |[0-9][0-9][0-9][0-9]-[0-9][0-9]?-[0-9][0-9]?
                      (?:[Tt]|[\ \t]+)[0-9][0-9]?:[0-9][0-9]:[0-9][0-9](?:\.[0-9]*)?
                      (?:[\ \t]*(?:Z|[-+][0-9][0-9]?(?::[0-9][0-9])?))?)$""",
     list("0123456789")),
):
    _StrictLoader.add_implicit_resolver(f"tag:yaml.org,2002:{_tag}", re.compile(_pattern, re.X),
                                        _first)


class _PlainDumper(yaml.SafeDumper):
    """PyYAML's safe dumper, quoting every string that either YAML 1.1 or 1.2 reads otherwise."""


for _first_char, _resolvers in _StrictLoader.yaml_implicit_resolvers.items():
    for _resolved_tag, _regexp in _resolvers:
        _PlainDumper.add_implicit_resolver(_resolved_tag, _regexp, [_first_char])


def dump_plain(data: Any) -> str:
    """Serialise plain data (a new file, no comments to keep) so that `load_text` reads it back."""
    return yaml.dump(data, Dumper=_PlainDumper, sort_keys=False, allow_unicode=True)


def _reject_shared(data: Any, file: str) -> None:
    """Refuse documents whose containers are shared, i.e. that used an anchor and an alias."""
    seen: set[int] = set()
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, dict | list):
            if id(item) in seen:
                raise ValidationError(file, "(document)", "*alias",
                                      "YAML anchors and aliases are not allowed here")
            seen.add(id(item))
            stack.extend(item.values() if isinstance(item, dict) else item)


def load_text(text: str, file: str) -> Any:
    """Parse `text` (the content of `file`) into plain data, refusing what no registry needs."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_FILE_BYTES:
        raise ValidationError(file, "(document)", f"{len(text)} characters",
                              f"file larger than {MAX_FILE_BYTES // 1024} KiB")
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except _DuplicateKey as exc:
        raise ValidationError(file, f"line {exc.line}", exc.key, "duplicate key") from None
    except _AliasUsed as exc:
        raise ValidationError(file, f"line {exc.line}", "<<", "YAML merge keys are not allowed"
                              ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "(document)"
        problem = getattr(exc, "problem", None) or str(exc)
        raise ValidationError(file, where, "", f"not valid YAML: {problem}") from None
    except RecursionError:
        raise ValidationError(file, "(document)", "", "nested too deeply") from None
    _reject_shared(data, file)
    return data


def load_file(path: Path, label: str | None = None) -> Any:
    """Read (safely: a regular file, bounded) and parse one registry file (see `load_text`)."""
    from coophost.fsutil import read_regular

    try:
        raw = read_regular(path, label or str(path), MAX_FILE_BYTES)
    except FileNotFoundError:
        raise ValidationError(label or str(path), "(file)", str(path), "no such file") from None
    return load_bytes(raw, label or str(path))


def load_bytes(raw: bytes, label: str) -> Any:
    """Decode (UTF-8 only) and parse the bytes of one registry file."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValidationError(label, "(document)", raw[exc.start:exc.end], "not UTF-8") from None
    return load_text(text, label)


def round_trip() -> Any:
    """Return a ruamel.yaml round-trip loader/dumper configured like the files coophost writes."""
    from ruamel.yaml import YAML

    rt = YAML(typ="rt")
    rt.preserve_quotes = True
    rt.indent(mapping=2, sequence=4, offset=2)
    rt.width = 100
    rt.allow_duplicate_keys = False
    return rt


def rt_load(text: str) -> Any:
    """Load `text` as a ruamel.yaml round-trip document (comments and order kept)."""
    return round_trip().load(text)


def rt_dump(document: Any) -> str:
    """Serialise a round-trip document back to text."""
    buffer = io.StringIO()
    round_trip().dump(document, buffer)
    return buffer.getvalue()


def _printable(char: str) -> bool:
    code = ord(char)
    return (code in (0x09, 0x0A, 0x0D) or 0x20 <= code <= 0x7E
            or 0xA0 <= code <= 0xD7FF or 0xE000 <= code <= 0xFFFD
            or 0x10000 <= code <= 0x10FFFF) and char not in "\u2028\u2029\ufeff"


def quote(text: str) -> str:
    """Return a YAML double-quoted scalar that reads back as exactly `text`."""
    out = ['"']
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif char == "\n":
            out.append("\\n")
        elif char == "\t":
            out.append("\\t")
        elif char == "\r":
            out.append("\\r")
        elif _printable(char):
            out.append(char)
        else:
            code = ord(char)
            out.append(f"\\x{code:02x}" if code <= 0xFF else
                       f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")
    out.append('"')
    return "".join(out)
