"""A real certificate from the ACME CA (pebble), served, and renewed with the services reloaded."""

import json
import textwrap

import pytest

# The role's instance, by its inventory group (its name carries $COOPHOST_MOLECULE_TAG).
testinfra_hosts = ["tls"]

ROOT = "/tmp/pebble-root.pem"
FETCH_ROOT = textwrap.dedent('''
    import urllib.request
    # pebble's issuing root, from its management port (HTTPS, trusted through the role).
    with urllib.request.urlopen("https://acme.mol.test:15000/roots/0") as answer:
        open("/tmp/pebble-root.pem", "wb").write(answer.read())
''')


def served(host, name="host.mol.test"):
    """Return (verify code line, serial) of the certificate nginx serves for `name`."""
    out = host.check_output(
        f"openssl s_client -connect localhost:443 -servername {name} -CAfile {ROOT} "
        f"-verify_hostname {name} </dev/null 2>/dev/null")
    verify = next(line for line in out.splitlines() if "Verify return code" in line)
    serial = host.check_output(
        f"openssl s_client -connect localhost:443 -servername {name} </dev/null 2>/dev/null"
        " | openssl x509 -noout -serial")
    return verify.strip(), serial


@pytest.fixture(scope="module")
def pebble_root(host):
    host.check_output("python3 -c %s", FETCH_ROOT)
    return ROOT


def test_certificate_from_the_acme_ca_is_served_and_verifies(host, pebble_root):
    for name in ("host.mol.test", "www.host.mol.test"):
        verify, _ = served(host, name)
        assert verify == "Verify return code: 0 (ok)"


def test_certificate_names_and_key_type(host):
    text = host.check_output(
        "openssl x509 -in /etc/letsencrypt/live/host.mol.test/cert.pem -noout -text")
    assert "DNS:host.mol.test" in text and "DNS:www.host.mol.test" in text
    assert "id-ecPublicKey" in text
    assert "Pebble" in text


def test_private_key_is_private(host):
    key = host.file("/etc/letsencrypt/live/host.mol.test/privkey.pem")
    target = host.file(key.linked_to)
    assert target.user == "root" and target.mode & 0o077 == 0


def test_renewal_is_automatic_and_remembers_the_ca(host):
    assert host.service("certbot.timer").is_enabled
    assert host.service("certbot.timer").is_running
    renewal = host.file("/etc/letsencrypt/renewal/host.mol.test.conf").content_string
    assert "server = https://acme.mol.test:14000/dir" in renewal
    assert "authenticator = webroot" in renewal


def test_renewal_reloads_the_services(host, pebble_root):
    _, before = served(host)
    host.check_output("certbot renew --force-renewal --no-random-sleep-on-renew -q")
    verify, after = served(host)
    assert after != before
    assert verify == "Verify return code: 0 (ok)"


def test_port_80_serves_challenges_and_redirects(host):
    host.check_output("echo token > /var/lib/coophost/acme/.well-known/acme-challenge/t")
    try:
        answer = host.check_output(
            "python3 -c %s",
            "import urllib.request;"
            "print(urllib.request.urlopen('http://localhost/.well-known/acme-challenge/t').read())")
        assert "token" in answer
    finally:
        host.run("rm -f /var/lib/coophost/acme/.well-known/acme-challenge/t")
    status = host.check_output(
        "python3 -c %s",
        "import http.client as h; c = h.HTTPConnection('localhost'); c.request('GET', '/x');"
        "r = c.getresponse(); print(r.status, r.getheader('Location'))")
    assert status == "301 https://localhost/x"


def test_request_recorded(host):
    request = json.loads(
        host.file("/etc/letsencrypt/coophost-host.mol.test.request").content_string)
    assert request["domains"] == ["host.mol.test", "www.host.mol.test"]
