"""A real certificate from the ACME CA (pebble), served, and renewed with the services reloaded.

Member vhosts (converge, side_effect): git.alpha.test has DNS and gets its own certificate;
git.beta.test has none yet, stands in with the host certificate and is pending until a test
publishes its DNS record and runs the retry; git.gone.test was removed from the list.
"""

import json
import os
import textwrap

import pytest
import testinfra

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


VHOSTS = "/etc/coophost/tls/vhosts"
PENDING = "/var/lib/coophost/tls/vhosts-pending"


def serial_of(host, path):
    return host.check_output(f"openssl x509 -in {path} -noout -serial")


def names_in(host, path):
    text = host.check_output(f"openssl x509 -in {path} -noout -ext subjectAltName")
    return sorted(part.strip().removeprefix("DNS:") for part in text.splitlines()[1].split(","))


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
    _, vhost_before = served(host, "git.alpha.test")
    host.check_output("certbot renew --force-renewal --no-random-sleep-on-renew -q")
    verify, after = served(host)
    assert after != before
    assert verify == "Verify return code: 0 (ok)"
    verify, vhost_after = served(host, "git.alpha.test")
    assert vhost_after != vhost_before
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
    vhost = json.loads(
        host.file("/etc/letsencrypt/coophost-vhosts/git.alpha.test.request").content_string)
    assert vhost["domains"] == ["git.alpha.test"]


def test_vhost_with_dns_gets_a_certificate_of_its_own(host, pebble_root):
    link = host.file(f"{VHOSTS}/git.alpha.test")
    assert link.is_symlink and link.linked_to == "/etc/letsencrypt/live/git.alpha.test"
    assert names_in(host, f"{VHOSTS}/git.alpha.test/fullchain.pem") == ["git.alpha.test"]
    verify, serial = served(host, "git.alpha.test")
    assert verify == "Verify return code: 0 (ok)"
    assert serial == serial_of(host, f"{VHOSTS}/git.alpha.test/fullchain.pem")
    renewal = host.file("/etc/letsencrypt/renewal/git.alpha.test.conf").content_string
    assert "server = https://acme.mol.test:14000/dir" in renewal
    assert "authenticator = webroot" in renewal


def test_no_member_name_on_the_host_certificate(host):
    names = names_in(host, "/etc/letsencrypt/live/host.mol.test/cert.pem")
    assert names == ["host.mol.test", "www.host.mol.test"]


def test_vhost_without_dns_stands_in_with_the_host_certificate_and_is_pending(host):
    link = host.file(f"{VHOSTS}/git.beta.test")
    assert link.is_symlink and link.linked_to == "/etc/letsencrypt/live/host.mol.test"
    assert not host.file("/etc/letsencrypt/live/git.beta.test").exists
    assert host.file(PENDING).content_string == "git.beta.test\n"
    _, serial = served(host, "git.beta.test")
    assert serial == serial_of(host, "/etc/letsencrypt/live/host.mol.test/cert.pem")


def test_departed_vhost_is_no_longer_linked_nor_kept(host):
    assert not host.file(f"{VHOSTS}/git.gone.test").exists
    assert not host.file("/etc/letsencrypt/live/git.gone.test").exists
    assert not host.file("/etc/letsencrypt/renewal/git.gone.test.conf").exists
    assert not host.file("/etc/letsencrypt/coophost-vhosts/git.gone.test.request").exists
    assert sorted(host.file(VHOSTS).listdir()) == ["git.alpha.test", "git.beta.test"]


def test_pending_vhosts_are_retried_hourly(host):
    timer = host.service("coophost-vhost-certs.timer")
    assert timer.is_enabled and timer.is_running
    assert "OnCalendar=hourly" in host.file(
        "/etc/systemd/system/coophost-vhost-certs.timer").content_string


def test_retry_is_quiet_when_nothing_changes(host):
    out = json.loads(host.check_output("/usr/local/sbin/coophost-vhost-certs --json"))
    assert out["changed"] is False
    assert list(out["pending"]) == ["git.beta.test"]
    assert out["errors"] == {}


def test_vhost_gets_its_certificate_once_its_dns_is_published(host, pebble_root):
    inventory = os.environ["MOLECULE_INVENTORY_FILE"]
    acme = testinfra.get_hosts(["acme"], connection="ansible", ansible_inventory=inventory)[0]
    acme.check_output(
        "sed -i 's/ git.alpha.test/ git.alpha.test git.beta.test/' /etc/coophost-dns/hosts"
        " && systemctl reload coophost-dns")
    host.check_output("systemctl start coophost-vhost-certs.service")
    link = host.file(f"{VHOSTS}/git.beta.test")
    assert link.linked_to == "/etc/letsencrypt/live/git.beta.test"
    assert host.file(PENDING).content_string == ""
    verify, serial = served(host, "git.beta.test")  # nginx was reloaded
    assert verify == "Verify return code: 0 (ok)"
    assert serial == serial_of(host, f"{VHOSTS}/git.beta.test/fullchain.pem")
    assert names_in(host, f"{VHOSTS}/git.beta.test/fullchain.pem") == ["git.beta.test"]
