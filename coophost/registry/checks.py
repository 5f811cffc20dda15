"""Allowlist checks for the values a registry holds: slugs, domains, emails, text, SSH keys.

Each check returns the value (or its normalised form, for domains) or raises ValidationError
naming the file, the field path and the value. Values are rejected, never cleaned up.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import difflib
import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from coophost.errors import UsageError, ValidationError

# A member's host account is `m-<slug>` (roles/members, members_user_prefix) and systemd (the
# hosts' sysusers and logind) takes user names of at most 31 characters (it must fit utmp):
# so a slug has at most 29.
ACCOUNT_PREFIX = "m-"
ACCOUNT_NAME_MAX = 31
SLUG_MAX = ACCOUNT_NAME_MAX - len(ACCOUNT_PREFIX)
SLUG_RE = re.compile(r"^[a-z][a-z0-9-]+$")
HOST_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
LOCALPART_RE = re.compile(r"^[a-z0-9](?:[a-z0-9._+-]{0,62}[a-z0-9])?$")
EMAIL_LOCAL_RE = re.compile(r"^[A-Za-z0-9_%+-]+(?:\.[A-Za-z0-9_%+-]+)*$")
SSH_KEY_TYPES = frozenset({
    "ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521", "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com",
})
# Unicode categories never welcome in a registry string: controls, format characters (bidi
# overrides, zero-width joiners), surrogates, private use, unassigned.
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
# Scripts that legitimately mix inside one label.
_SCRIPT_MIXES = (frozenset({"CJK", "HIRAGANA", "KATAKANA"}), frozenset({"CJK", "HANGUL"}))
# Letters of other scripts that look like Latin ones; a label made only of them is a look-alike.
_LATIN_LOOKALIKES = frozenset(
    "аеорсухіјѕԁһӏԛԝєѵкмнтвгпаеіојѕхуАВЕКМНОРСТХІЈЅ"  # Cyrillic
    "αβεικνορτυχΑΒΕΖΗΙΚΜΝΟΡΤΥΧ"  # Greek
)


def fail(file: str, field: str, value: object, problem: str, hint: str | None = None) -> None:
    """Raise the ValidationError every check raises."""
    raise ValidationError(file, field, value, problem, hint=hint)


class Collector:
    """Gathers the problems of independent checks, so that one run reports all of them.

    Each `with errors.check():` block runs one check; a ValidationError it raises is kept
    (its problems, when it holds several) and the code after the block goes on. `done()`
    then raises one error naming every problem kept (ValidationError.combine), if any.
    """

    def __init__(self) -> None:
        self.errors: list[ValidationError] = []

    @contextlib.contextmanager
    def check(self) -> Iterator[None]:
        """Run the block; keep the problems of a ValidationError it raises."""
        try:
            yield
        except ValidationError as exc:
            self.errors.extend(exc.errors)

    def done(self) -> None:
        """Raise one error naming every problem kept, if there is any."""
        if self.errors:
            raise ValidationError.combine(self.errors)


def refuse_unknown_keys(data: Mapping[str, Any], allowed: Iterable[str], file: str,
                        path: str) -> None:
    """Refuse keys not in `allowed` (all of them at once), suggesting the nearest known one."""
    known = list(allowed)
    errors = Collector()
    for key in data:
        if key not in known:
            with errors.check():
                fail(file, _join(path, str(key)), key, "unknown key", suggest(str(key), known))
    errors.done()


def suggest(word: str, known: Iterable[str]) -> str:
    """Return a did-you-mean hint for `word` among `known`."""
    choices = list(known)
    close = difflib.get_close_matches(word, choices, n=1)
    return f"did you mean {close[0]!r}?" if close else f"known: {', '.join(choices) or 'none'}"


def no_member(slug: str, known: Iterable[str]) -> UsageError:
    """The one error for a member that does not exist, with the closest name when there is one."""
    close = difflib.get_close_matches(slug, list(known), n=1)
    return UsageError(f"no member {slug!r}",
                      hint=f"did you mean {close[0]!r}? (`coophost member list` shows them)"
                      if close else "`coophost member list` shows them")


def no_host(name: str, known: Iterable[str]) -> UsageError:
    """The one error for a host that hosts.yml does not have, with the closest name."""
    close = difflib.get_close_matches(name, list(known), n=1)
    return UsageError(f"no host {name!r} in hosts.yml",
                      hint=f"did you mean {close[0]!r}? (`coophost host list` shows them)"
                      if close else "`coophost host list` shows them")


def no_service(name: str, known: Iterable[str]) -> UsageError:
    """The one error for a service the catalogue does not have, with the closest name."""
    close = difflib.get_close_matches(name, list(known), n=1)
    return UsageError(f"no service {name!r}",
                      hint=f"did you mean {close[0]!r}? (`coophost service list` shows them)"
                      if close else "`coophost service list` shows them")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def mapping(value: object, file: str, field: str) -> dict[str, Any]:
    """Return a YAML mapping with string keys."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        fail(file, field, value, f"must be a mapping, not {type(value).__name__}")
    assert isinstance(value, dict)
    for key in value:
        if not isinstance(key, str):
            fail(file, field, key, "keys must be strings")
    return value


def sequence(value: object, file: str, field: str, max_items: int = 1000) -> list[Any]:
    """Return a YAML sequence of at most `max_items`."""
    if value is None:
        return []
    if not isinstance(value, list):
        fail(file, field, value, f"must be a list, not {type(value).__name__}")
    if len(value) > max_items:  # type: ignore[arg-type]
        fail(file, field, f"{len(value)} items", f"at most {max_items} items")  # type: ignore
    return value  # type: ignore[return-value]


def integer(value: object, file: str, field: str, low: int | None = None,
            high: int | None = None) -> int:
    """Return an integer (not a bool, not a string) within [low, high]."""
    if isinstance(value, bool) or not isinstance(value, int):
        fail(file, field, value, f"must be an integer, not {type(value).__name__}")
    assert isinstance(value, int)
    if low is not None and value < low:
        fail(file, field, value, f"must be at least {low}")
    if high is not None and value > high:
        fail(file, field, value, f"must be at most {high}")
    return value


def boolean(value: object, file: str, field: str) -> bool:
    """Return check for true or false."""
    if not isinstance(value, bool):
        fail(file, field, value, f"must be true or false, not {type(value).__name__}")
    return bool(value)


def text(value: object, file: str, field: str, max_len: int = 200) -> str:
    """Free text a person wrote (a display name): any printable characters, one line."""
    if not isinstance(value, str):
        fail(file, field, value, f"must be a string, not {type(value).__name__}")
    assert isinstance(value, str)
    if not value.strip():
        fail(file, field, value, "must not be empty")
    if len(value) > max_len:
        fail(file, field, value, f"longer than {max_len} characters")
    for char in value:
        if unicodedata.category(char) in _FORBIDDEN_CATEGORIES:
            fail(file, field, value, f"contains the control or format character "
                 f"U+{ord(char):04X}")
    if value != unicodedata.normalize("NFC", value):
        fail(file, field, value, "must be in Unicode NFC form")
    return value


def slug(value: object, file: str, field: str) -> str:
    """Return a member slug: `^[a-z][a-z0-9-]+$`, 2 to SLUG_MAX characters."""
    if not isinstance(value, str) or not SLUG_RE.match(value):
        fail(file, field, value, "must match ^[a-z][a-z0-9-]+$ (lowercase letters, digits, "
             "hyphens; starting with a letter)")
    assert isinstance(value, str)
    if len(value) > SLUG_MAX:
        fail(file, field, value, f"longer than {SLUG_MAX} characters: the member's host account "
             f"{ACCOUNT_PREFIX}{value} would pass the {ACCOUNT_NAME_MAX} characters a Linux user "
             "name may have")
    return value


def host_name(value: object, file: str, field: str) -> str:
    """Return an inventory host name (letters, digits, hyphen, underscore)."""
    if not isinstance(value, str) or not HOST_RE.match(value):
        fail(file, field, value, "must match ^[a-z0-9][a-z0-9_-]{0,62}$")
    return value  # type: ignore[return-value]


def localpart(value: object, file: str, field: str) -> str:
    """Return a mailbox or alias name (the part before @) a member may create."""
    if not isinstance(value, str) or not LOCALPART_RE.match(value) or ".." in value:
        fail(file, field, value, "must be a lowercase mail name: letters, digits, '.', '_', "
             "'+', '-' (at most 64, starting and ending with a letter or digit)")
    return value  # type: ignore[return-value]


def _script(char: str) -> str:
    if char.isascii():
        return "LATIN" if char.isalpha() else "COMMON"
    if unicodedata.category(char).startswith("M"):
        return "COMMON"  # combining marks take the script of their base letter
    name = unicodedata.name(char, "")
    first = name.split(" ", 1)[0]
    if first == "CJK":
        return "CJK"
    return first or "UNKNOWN"


def _check_lookalikes(label: str, file: str, field: str, value: object) -> None:
    scripts = {_script(c) for c in label} - {"COMMON", "DIGIT"}
    if len(scripts) > 1 and not any(scripts <= mix for mix in _SCRIPT_MIXES):
        fail(file, field, value, f"label {label!r} mixes scripts ({', '.join(sorted(scripts))}):"
             " refused as a possible look-alike")
    letters = [c for c in label if c.isalpha()]
    if scripts and scripts != {"LATIN"} and letters and all(
            c in _LATIN_LOOKALIKES for c in letters):
        fail(file, field, value, f"label {label!r} is made only of letters that look like "
             "Latin ones: refused as a look-alike")


def domain(value: object, file: str, field: str) -> tuple[str, str]:
    """Check a domain name, IDNA 2008 (UTS 46): return its (Unicode, ASCII A-label) forms.

    The file must hold the normalised form already (lowercase, NFC, no trailing dot); mixed
    scripts and whole-label Latin look-alikes are refused.
    """
    if not isinstance(value, str):
        fail(file, field, value, f"must be a domain name string, not {type(value).__name__}")
    assert isinstance(value, str)
    if len(value) > 253 or "." not in value.strip("."):
        fail(file, field, value, "must be a fully qualified domain name (at most 253 characters)")
    if value.isascii():
        ascii_form = value
        if not re.fullmatch(r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,61}"
                            r"[a-z0-9]", value):
            fail(file, field, value, "not a valid lowercase domain name")
        if "xn--" not in value:
            return value, value
    import idna

    try:
        if value.isascii():
            unicode_form = idna.decode(value)
            ascii_form = idna.encode(unicode_form).decode()
        else:
            ascii_form = idna.encode(value, uts46=True, transitional=False).decode()
            unicode_form = idna.decode(ascii_form)
    except (idna.IDNAError, UnicodeError) as exc:
        fail(file, field, value, f"not a valid internationalised domain name: {exc}")
    if not value.isascii() and unicode_form != value:
        fail(file, field, value, "not in normalised form", hint=f"write it as {unicode_form!r}")
    if value.isascii() and ascii_form != value:
        fail(file, field, value, "not in normalised form", hint=f"write it as {ascii_form!r}")
    for label in unicode_form.split("."):
        _check_lookalikes(label, file, field, value)
    return unicode_form, ascii_form


def email(value: object, file: str, field: str) -> str:
    """Return an email address: a plain ASCII local part and a valid domain."""
    if not isinstance(value, str) or value.count("@") != 1 or len(value) > 254:
        fail(file, field, value, "must be an email address like name@example.org")
    assert isinstance(value, str)
    local, _, dom = value.partition("@")
    if len(local) > 64 or not EMAIL_LOCAL_RE.match(local):
        fail(file, field, value, "the part before @ has characters an address may not use")
    domain(dom, file, field)
    return value  # type: ignore[return-value]


def ssh_public_key(value: object, file: str, field: str) -> str:
    """One OpenSSH public key line: a known type, its key (read by `cryptography`), a comment."""
    if not isinstance(value, str) or len(value) > 16384 or "\n" in value or "\r" in value:
        fail(file, field, value, "must be one OpenSSH public key line")
    assert isinstance(value, str)
    parts = value.split(" ", 2)
    if len(parts) < 2 or parts[0] not in SSH_KEY_TYPES:
        fail(file, field, value, f"key type must be one of {', '.join(sorted(SSH_KEY_TYPES))}")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        fail(file, field, value, "the key is not valid base64")
    name_len = int.from_bytes(blob[:4], "big")
    if blob[4:4 + name_len] != parts[0].encode():
        fail(file, field, value, "the key blob does not match its type")
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives.serialization import load_ssh_public_key

    try:
        load_ssh_public_key(f"{parts[0]} {parts[1]}".encode())
    except (ValueError, UnsupportedAlgorithm) as exc:
        fail(file, field, value, f"not a usable {parts[0]} key: {exc}")
    if len(parts) == 3:
        text(parts[2], file, field, max_len=200)
    return value  # type: ignore[return-value]


def url(value: object, file: str, field: str) -> str:
    """Return an https (or, for a lab, http) URL with a valid host."""
    if not isinstance(value, str) or not re.fullmatch(r"https?://[^\s/?#]+(?:[/?#]\S*)?",
                                                         value):
        fail(file, field, value, "must be an http(s) URL")
    return value  # type: ignore[return-value]
