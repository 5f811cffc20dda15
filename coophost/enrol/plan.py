"""The pure part of enrolling a host: fingerprints, the pinning verdict, capacity, scripts.

Nothing here touches the network or a file: `coophost.enrol.run` does, with these answers.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from enum import Enum

from coophost.errors import UsageError

FINGERPRINT_RE = re.compile(r"^SHA256:[A-Za-z0-9+/]{43}$")
USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
PASSWORD_ENV = "COOPHOST_BOOTSTRAP_PASSWORD"  # noqa: S105 - the variable's name

# What placement may fill is the machine minus headroom for the system itself (sshd, journald,
# fail2ban, unattended upgrades, the page cache, logs and package downloads on /).
RAM_HEADROOM_SHARE = 0.2  # a fifth of the RAM ...
RAM_HEADROOM_MIN_MB = 512  # ... and never less than this
DISK_HEADROOM_SHARE = 0.1  # a tenth of what / has free ...
DISK_HEADROOM_MIN_GB = 2  # ... and never less than this
HEADROOM_HELP = (f"{RAM_HEADROOM_SHARE:.0%} of its RAM (at least {RAM_HEADROOM_MIN_MB} MB) and "
                 f"{DISK_HEADROOM_SHARE:.0%} of the free space on / (at least "
                 f"{DISK_HEADROOM_MIN_GB} GB) are left to the system")

SUDOERS_PATH = "/etc/sudoers.d/coophost"
SSHD_DROP_IN = "/etc/ssh/sshd_config.d/00-coophost.conf"
# What the baseline (roles/common's sshd_config) turns off, in a drop-in read before any other
# (sshd keeps the first value it reads); `sshd -T` must then report these values.
SSHD_SETTINGS = {"permitrootlogin": "no", "passwordauthentication": "no",
                 "kbdinteractiveauthentication": "no"}
SSHD_TEXT = ("# Written by `coophost host enrol`: keys only, no root login (the baseline's "
             "settings, until the first deploy templates sshd_config).\n"
             "PermitRootLogin no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n")

# Run as root with `sh -c SETUP_SCRIPT sh USER PUBLIC-KEY`: the values are arguments, never
# pasted into the script. The sudoers file is checked with `visudo -cf` before it is moved into
# place (a name with a dot is skipped by sudo's includedir meanwhile).
SETUP_SCRIPT = r"""set -eu
user="$1"; key="$2"
if ! id -u "$user" >/dev/null 2>&1; then
  /usr/sbin/useradd --create-home --shell /bin/bash "$user"
fi
home=$(getent passwd "$user" | cut -d: -f6)
group=$(id -gn "$user")
install -d -m 0700 -o "$user" -g "$group" "$home/.ssh"
touch "$home/.ssh/authorized_keys"
keys="$home/.ssh/authorized_keys"
grep -qxF "$key" "$keys" || printf '%s\n' "$key" >> "$keys"
chown "$user:$group" "$home/.ssh/authorized_keys"
chmod 0600 "$home/.ssh/authorized_keys"
tmp=$(mktemp /etc/sudoers.d/.coophost.XXXXXX)
printf '%s ALL=(ALL:ALL) NOPASSWD: ALL\n' "$user" > "$tmp"
chmod 0440 "$tmp"
if ! /usr/sbin/visudo -cf "$tmp" >/dev/null; then
  rm -f "$tmp"; echo "visudo refused the sudoers file" >&2; exit 1
fi
mv -f "$tmp" /etc/sudoers.d/coophost
"""

# Run as root with `sh -c HARDEN_SCRIPT sh TEXT`, once the admin account is proven to work.
# A drop-in sshd refuses (`sshd -t`) is taken back before anything reloads.
HARDEN_SCRIPT = r"""set -eu
conf=/etc/ssh/sshd_config.d/00-coophost.conf
mkdir -p /etc/ssh/sshd_config.d /run/sshd
tmp=$(mktemp /etc/ssh/sshd_config.d/.coophost.XXXXXX)
printf '%s' "$1" > "$tmp"
chmod 0644 "$tmp"
mv -f "$tmp" "$conf"
if ! /usr/sbin/sshd -t; then rm -f "$conf"; echo "sshd -t refused the drop-in" >&2; exit 1; fi
systemctl reload ssh 2>/dev/null || systemctl reload sshd
"""


def fingerprint(blob: bytes) -> str:
    """OpenSSH's fingerprint of a public key blob: `SHA256:` and unpadded base64 of its hash."""
    digest = hashlib.sha256(blob).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def check_fingerprint(value: str) -> str:
    """Refuse (exit 2) a --fingerprint that is not `SHA256:` and 43 base64 characters."""
    if not FINGERPRINT_RE.match(value):
        raise UsageError(f"--fingerprint {value!r}: not an OpenSSH SHA256 fingerprint",
                         hint="read it on the host's console with "
                              "`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`")
    return value


def check_user(value: str, where: str) -> str:
    """Refuse (exit 2) a login name that is not a plain Unix user name."""
    if not USER_RE.match(value):
        raise UsageError(f"{where}: {value!r} is not a Unix user name")
    return value


def known_hosts_name(address: str, port: int) -> str:
    """The name known_hosts (and paramiko) file a host's key under: `[addr]:port` off port 22."""
    return address if port == 22 else f"[{address}]:{port}"


@dataclass(frozen=True)
class PinnedKey:
    """One key of known_hosts: the names it is pinned for, its type and its base64 blob."""

    names: tuple[str, ...]
    key_type: str
    blob_b64: str


class Verdict(Enum):
    """What to do with the key a host offers."""

    ALREADY_PINNED = "already pinned"  # known_hosts holds this very key for the host
    MATCHES = "matches --fingerprint"  # new, and equal to the one read on the console
    ASK = "ask"  # new, no --fingerprint: show it and ask
    DIFFERS_FROM_PINNED = "differs from the pinned key"  # refused (exit 4)
    DIFFERS_FROM_GIVEN = "differs from --fingerprint"  # refused (exit 4)


def pin_verdict(offered_type: str, offered_blob: bytes, names: tuple[str, ...],
                pinned: list[PinnedKey], expected: str | None) -> Verdict:
    """Decide on the offered key: against what known_hosts pins for `names`, then --fingerprint.

    A host with a pinned key that is not the offered one is refused, whatever --fingerprint
    says: re-pinning a rebuilt host is a deliberate edit of known_hosts, not an enrolment.
    """
    offered_b64 = base64.b64encode(offered_blob).decode()
    mine = [key for key in pinned if set(key.names) & set(names)]
    found = fingerprint(offered_blob)
    if mine and not any(k.key_type == offered_type and k.blob_b64 == offered_b64 for k in mine):
        return Verdict.DIFFERS_FROM_PINNED
    if expected is not None and expected != found:
        return Verdict.DIFFERS_FROM_GIVEN
    if mine:
        return Verdict.ALREADY_PINNED
    return Verdict.MATCHES if expected is not None else Verdict.ASK


def add_known_host(text: str, name: str, key_type: str, blob: bytes) -> str:
    """`text` (a known_hosts file, maybe empty) with a line pinning the key for `name`."""
    line = f"{name} {key_type} {base64.b64encode(blob).decode()}\n"
    if text and not text.endswith("\n"):
        text += "\n"
    return text + line


def parse_mem_total_mb(meminfo: str) -> int:
    """MemTotal of /proc/meminfo, in MB (0 when absent)."""
    for line in meminfo.splitlines():
        key, _, rest = line.partition(":")
        if key.strip() == "MemTotal" and rest.split() and rest.split()[0].isdigit():
            return int(rest.split()[0]) // 1024
    return 0


def parse_df_free_gb(df_output: str) -> int:
    """The space available on the file system of `df -Pk /`'s last line, in whole GB."""
    lines = [line for line in df_output.splitlines() if line.strip()]
    fields = lines[-1].split() if lines else []
    if len(fields) >= 4 and fields[3].isdigit():
        return int(fields[3]) // (1024 * 1024)
    return 0


def declared_capacity(mem_total_mb: int, disk_free_gb: int) -> dict[str, int]:
    """What hosts.yml declares placement may fill: the machine minus the system's headroom.

    Raises UsageError (exit 2) when nothing would be left.
    """
    ram = mem_total_mb - max(RAM_HEADROOM_MIN_MB, int(mem_total_mb * RAM_HEADROOM_SHARE))
    disk = disk_free_gb - max(DISK_HEADROOM_MIN_GB, int(disk_free_gb * DISK_HEADROOM_SHARE))
    if ram < 1 or disk < 1:
        raise UsageError(f"the host has {mem_total_mb} MB of RAM and {disk_free_gb} GB free on /: "
                         f"nothing is left for members once {HEADROOM_HELP}")
    return {"ram_mb": ram, "disk_gb": disk}


def sshd_problems(effective: str) -> list[str]:
    """The baseline's settings `sshd -T` does not report (empty: all in force)."""
    seen = dict(line.split(None, 1) for line in effective.lower().splitlines()
                if len(line.split(None, 1)) == 2)
    return [f"{key} is {seen.get(key, 'unset')}, not {value}"
            for key, value in SSHD_SETTINGS.items() if seen.get(key) != value]


def as_root(argv: list[str], user: str, *, with_password: bool) -> list[str]:
    """`argv` run as root: as is for root, else through sudo (-S reads the password on stdin)."""
    if user == "root":
        return argv
    return ["sudo", "-S", "-p", "", "--", *argv] if with_password else ["sudo", "-n", "--", *argv]
