"""Shared by the nextcloud scenario's test folders: requests and commands inside the instance.

Every command runs on the converged instance (testinfra's `host`), as root unless it names a
member's account (`as_user`); the vhosts resolve to the instance and its test CA is trusted.
"""

import json
import shlex

SLUGS = ("alpha", "beta", "gamma")
# Each member life (converge.yml); alpha is a later member given the same slug after phase one.
OWNERS = {"alpha": "alpha.a1a1a1a1a1a1", "beta": "beta.b2b2b2b2b2b2", "gamma": "gamma.c3c3c3c3c3c3"}
LATER_ALPHA = "alpha.a9a9a9a9a9a9"
ROOT = "/srv/nextcloud"
ARCHIVE = "/srv/nextcloud-archive"
PHP_MODULES = ("ctype", "curl", "dom", "fileinfo", "gd", "libxml", "simplexml", "xmlreader",
               "xmlwriter", "mbstring", "openssl", "posix", "session", "zip", "zlib", "json",
               "pdo_pgsql", "intl", "sodium", "bcmath", "gmp", "exif", "bz2", "iconv", "phar",
               "apcu", "redis", "imagick", "zend opcache")


def user(slug):
    return f"nc-{slug}"


def unit_dir(slug, owner=None):
    """The unit's folder: named after its member life."""
    return f"{ROOT}/{owner or OWNERS[slug]}"


def database(slug, owner=None):
    """The unit's database: named after its member life."""
    return f"nextcloud_{owner or OWNERS[slug]}"


def redis_socket(slug):
    return f"/run/coophost-nextcloud-redis-{slug}/redis.sock"


def run(host, script):
    """Run `script` with bash in the instance."""
    return host.run("bash -c %s", "set -eu; " + script)


def as_user(host, slug, script):
    """Run `script` with bash as member `slug`'s account (its pool's user)."""
    return host.run("runuser -u %s -- bash -c %s", user(slug), "set -eu; " + script)


def get(host, url):
    """Status, headers (lower case) and body of an HTTPS GET from inside the instance."""
    out = run(host, f"curl -sS -D /tmp/ncmol-headers -o /tmp/ncmol-body {shlex.quote(url)}"
                    " && cat /tmp/ncmol-headers && echo ===body=== && cat /tmp/ncmol-body")
    assert out.rc == 0, out.stderr
    headers, body = out.stdout.split("===body===\n", 1)
    status = int(headers.splitlines()[0].split()[1])
    return status, headers.lower(), body


def preflight(host, slug):
    """The preflight page of member `slug` over HTTPS through its vhost (status, report)."""
    status, _, body = get(host, f"https://cloud.{slug}.test/coophost-preflight")
    return status, (json.loads(body) if status == 200 else body)
