"""The mail service, proven on the converged host: submission, delivery, DKIM, TLS, isolation.

Mail is sent and read by small Python programs run inside the instance, against the host's
own name (its container address, not loopback, so the host is "the outside" for postfix).
"""

import os
import pathlib
import textwrap
import uuid

import dkim
import pytest

CLIENT = textwrap.dedent(r'''
    import imaplib, smtplib, ssl, sys, time
    HOST = "mail.mol.test"
    CTX = ssl.create_default_context(cafile="/etc/letsencrypt/live/mail.mol.test/fullchain.pem")

    def password(login):
        return "test-password-" + login.split("@")[0]

    def message(sender, rcpt, subject):
        return (f"From: {sender}\r\nTo: {rcpt}\r\nSubject: {subject}\r\n"
                f"Message-ID: <{subject}@mol.test>\r\n\r\nHello from the molecule test.\r\n")

    def submit(login, sender, rcpt, subject, port=587):
        if port == 465:
            smtp = smtplib.SMTP_SSL(HOST, 465, context=CTX)
        else:
            smtp = smtplib.SMTP(HOST, port)
            smtp.starttls(context=CTX)
        smtp.login(login, password(login))
        smtp.sendmail(sender, [rcpt], message(sender, rcpt, subject))
        smtp.quit()

    def fetch(login, subject, folder="INBOX", timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            with imaplib.IMAP4_SSL(HOST, 993, ssl_context=CTX) as imap:
                imap.login(login, password(login))
                imap.select(folder, readonly=True)
                _, found = imap.search(None, "SUBJECT", subject)
                if found[0].split():
                    _, data = imap.fetch(found[0].split()[-1], "(RFC822)")
                    return data[0][1].decode()
            time.sleep(1)
        sys.exit(f"no message {subject} for {login} in {folder}")
''')


def run_client(host, code):
    """Run `code` after the client helpers inside the instance; return its result."""
    result = host.run("python3 -c %s", CLIENT + textwrap.dedent(code))
    return result


def subject():
    return "mol-" + uuid.uuid4().hex[:12]


def test_services_listen(host):
    for port in (25, 465, 587, 993):
        assert host.socket(f"tcp://0.0.0.0:{port}").is_listening
    assert not host.socket("tcp://0.0.0.0:143").is_listening
    assert not host.socket("tcp://0.0.0.0:110").is_listening


def test_submission_delivers_to_another_members_mailbox_signed(host):
    tag = subject()
    sent = run_client(host, f'''
        submit("ana@alpha.test", "ana@alpha.test", "cy@beta.test", "{tag}")
        print(fetch("cy@beta.test", "{tag}"))
    ''')
    assert sent.rc == 0, sent.stderr
    raw = sent.stdout.replace("\r\n", "\n").replace("\n", "\r\n").encode()
    assert b"DKIM-Signature:" in raw
    assert b"d=alpha.test" in raw and b"s=coophost" in raw
    record = published_dkim_record(host, "alpha").encode()

    def dns(name, timeout=5):
        assert name == b"coophost._domainkey.alpha.test."
        return record

    assert dkim.verify(raw, dnsfunc=dns)


def test_submissions_port_465_and_alias_domain_and_alias(host):
    tag = subject()
    sent = run_client(host, f'''
        submit("cy@beta.test", "cy@beta.test", "team@alpha-alt.test", "{tag}", port=465)
        fetch("ana@alpha.test", "{tag}")
        fetch("bo@alpha.test", "{tag}")
    ''')
    assert sent.rc == 0, sent.stderr


def test_postmaster_delivers_for_a_member_without_one(host):
    # beta has neither a postmaster mailbox nor alias: postmaster@ each of its domains (its DMARC
    # report address too) reaches its first mailbox, cy
    tag = subject()
    sent = run_client(host, f'''
        submit("ana@alpha.test", "ana@alpha.test", "postmaster@beta.test", "{tag}-1")
        submit("ana@alpha.test", "ana@alpha.test", "postmaster@lists.gamma.test", "{tag}-2")
        fetch("cy@beta.test", "{tag}-1")
        fetch("cy@beta.test", "{tag}-2")
    ''')
    assert sent.rc == 0, sent.stderr


def test_bare_line_feeds_are_normalized(host):
    assert host.check_output("postconf -h smtpd_forbid_bare_newline") == "normalize"
    assert host.check_output("postconf -h smtpd_forbid_bare_newline_exclusions") == \
        "$mynetworks"


def test_auth_not_offered_before_starttls(host):
    result = run_client(host, '''
        for port in (587, 25):
            smtp = smtplib.SMTP(HOST, port)
            smtp.ehlo()
            print(port, "before", smtp.has_extn("auth"))
            smtp.starttls(context=CTX)
            smtp.ehlo()
            print(port, "after", smtp.has_extn("auth"))
            smtp.quit()
    ''')
    assert result.rc == 0, result.stderr
    lines = result.stdout.split("\n")
    assert "587 before False" in lines
    assert "587 after True" in lines
    assert "25 before False" in lines
    assert "25 after False" in lines


def test_login_refused_without_tls_on_submission(host):
    result = run_client(host, '''
        smtp = smtplib.SMTP(HOST, 587)
        smtp.ehlo()
        code, _ = smtp.docmd("AUTH", "PLAIN AGFuYUBhbHBoYS50ZXN0AHg=")
        print(code)
    ''')
    assert result.stdout.strip() != "235"
    assert result.stdout.strip().startswith("5")


@pytest.mark.parametrize("port", [25, 587])
def test_no_relay_to_outside_without_authentication(host, port):
    result = run_client(host, f'''
        smtp = smtplib.SMTP(HOST, {port})
        smtp.starttls(context=CTX)
        smtp.ehlo()
        smtp.mail("someone@example.org")
        print(smtp.rcpt("victim@example.net")[0])
    ''')
    assert result.rc == 0, result.stderr
    assert result.stdout.strip().startswith("5")


def test_a_moved_units_mail_is_relayed_to_its_new_host_for_its_addresses_only(host):
    tables = "/etc/postfix/coophost"
    assert host.check_output(f"postmap -q delta.test texthash:{tables}/transport") \
        == "smtp:[192.0.2.25]:25"
    assert host.check_output(f"postmap -q delta.test texthash:{tables}/relay_domains") == "other"
    for address in ("eve@delta.test", "sales@delta.test", "postmaster@delta.test"):
        assert host.check_output(f"postmap -q {address} texthash:{tables}/relay_recipients") \
            == "ok"
    # members placed here are not relayed
    assert host.run(f"postmap -q beta.test texthash:{tables}/transport").rc == 1
    # (that the relay takes mail for these addresses only, over SMTP, is proven in the lab:
    # tests/integration/test_move.py; delta.test resolves nowhere here)
    assert host.run(f"postmap -q nobody@delta.test texthash:{tables}/relay_recipients").rc == 1
    main_cf = host.check_output("postconf -h relay_recipient_maps transport_maps")
    assert "relay_recipients" in main_cf and "transport" in main_cf


def test_authenticated_user_cannot_send_as_another_member(host):
    result = run_client(host, '''
        try:
            submit("ana@alpha.test", "cy@beta.test", "bo@alpha.test", "spoof")
            print("accepted")
        except smtplib.SMTPException as error:
            print("refused", error)
    ''')
    assert result.stdout.startswith("refused"), result.stdout


@pytest.mark.parametrize("target", [
    "localhost:993", "mail.mol.test:465", "mail.mol.test:587 -starttls smtp",
    "mail.mol.test:25 -starttls smtp"])
def test_tls_1_1_refused_1_2_accepted(host, target):
    # SECLEVEL=0 lets the client offer TLS 1.1, so a failure is the server's refusal.
    old = host.run(
        f"openssl s_client -connect {target} -tls1_1 -cipher DEFAULT@SECLEVEL=0 </dev/null")
    assert old.rc != 0
    new = host.run(f"openssl s_client -connect {target} -tls1_2 </dev/null")
    assert new.rc == 0
    assert "Protocol  : TLSv1.2" in new.stdout


def test_members_cannot_read_each_others_mail(host):
    result = run_client(host, '''
        imap = imaplib.IMAP4_SSL(HOST, 993, ssl_context=CTX)
        try:
            imap.login("cy@beta.test", password("ana@alpha.test"))
            print("cross-login accepted")
        except imaplib.IMAP4.error:
            print("cross-login refused")
        imap = imaplib.IMAP4_SSL(HOST, 993, ssl_context=CTX)
        imap.login("ana@alpha.test", password("ana@alpha.test"))
        print(imap.list()[1])
        print(imap.select("../cy")[0], imap.select("beta.test/cy")[0])
    ''')
    assert result.rc == 0, result.stderr
    assert "cross-login refused" in result.stdout
    assert "cy" not in result.stdout.split("\n")[1]
    assert result.stdout.split("\n")[2] == "NO NO"
    root = host.file("/var/mail/units")
    assert root.user == "vmail" and root.mode == 0o700


def test_suspended_member_cannot_log_in_but_keeps_receiving(host):
    tag = subject()
    result = run_client(host, f'''
        for login in ("dee@gamma.test", "nopass@beta.test"):
            try:
                imaplib.IMAP4_SSL(HOST, 993, ssl_context=CTX).login(login, password(login))
                print(login, "imap accepted")
            except imaplib.IMAP4.error:
                print(login, "imap refused")
            try:
                submit(login, login, "cy@beta.test", "x")
                print(login, "smtp accepted")
            except smtplib.SMTPException:
                print(login, "smtp refused")
        submit("ana@alpha.test", "ana@alpha.test", "dee@gamma.test", "{tag}")
    ''')
    assert result.rc == 0, result.stderr
    for login in ("dee@gamma.test", "nopass@beta.test"):
        assert f"{login} imap refused" in result.stdout
        assert f"{login} smtp refused" in result.stdout
    maildir = "/var/mail/units/gamma.c3c3c3c3c3c3/gamma.test/dee/Maildir/new"
    kept = host.run(f"timeout 30 sh -c 'until grep -rl {tag} {maildir}; do sleep 1; done'")
    assert kept.rc == 0
    # mail_suspended_mail is accept here (bounce/ tests the other setting): nothing is refused.
    assert host.check_output("postmap -s texthash:/etc/postfix/coophost/suspended") == ""


def test_quota_per_mailbox(host):
    quota = host.check_output("doveadm quota get -u ana@alpha.test")
    assert "102400" in quota  # 100 MB in KiB
    quota = host.check_output("doveadm quota get -u cy@beta.test")
    assert "204800" in quota


def test_gtube_rejected_for_filtered_member(host):
    result = run_client(host, r'''
        gtube = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
        smtp = smtplib.SMTP(HOST, 25)
        smtp.starttls(context=CTX)
        try:
            smtp.sendmail("spammer@example.org", ["ana@alpha.test"],
                          f"From: spammer@example.org\r\nSubject: gtube\r\n\r\n{gtube}\r\n")
            print("accepted")
        except smtplib.SMTPException as error:
            print("refused", error)
    ''')
    assert result.stdout.startswith("refused"), result.stdout


def test_member_strings_never_templated(host):
    # alpha's record went through coophost's registry parser, unit_vars and host vars template
    # (render_member.py): its name, a Jinja lookup, reached the role as text, and the lookup,
    # which would have touched a file on the controller, never ran.
    ephemeral = os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]
    name = "{{ lookup('pipe', 'touch " + ephemeral + "/coophost-templated') }}"
    assert host.file("/root/molecule-alpha-name").content_string == name
    assert not pathlib.Path(ephemeral, "coophost-templated").exists()


def test_secrets_are_private(host):
    users = host.file("/etc/dovecot/coophost-users")
    assert users.mode == 0o640 and users.group == "dovecot"
    keys = host.file("/var/lib/rspamd/dkim/alpha.key")
    assert keys.mode == 0o640 and keys.group == "_rspamd"
    assert host.file("/etc/rspamd/coophost-dkim-keys.json").mode == 0o600


def published_dkim_record(host, member):
    """The DKIM TXT value coophost publishes for `member` (the catalogue's record template
    filled by the mail service's hooks with the public key of the private key the role was
    given)."""
    from coophost.registry.catalogue import load_catalogue

    service = load_catalogue().services["mail"]
    [template] = [r for r in service.dns if "{dkim_public_key}" in r["value"]]
    pem = host.file(f"/root/molecule-dkim-{member}.pem").content_string
    values = service.hooks.dns_values(None, {}, lambda name: pem).values
    return template["value"].format(dkim_public_key=values["dkim_public_key"][0])


def test_dkim_key_files_match_the_published_records(host):
    published = {}
    for member in ("alpha", "beta", "gamma"):
        der = host.check_output(f"openssl rsa -in /var/lib/rspamd/dkim/{member}.key -pubout "
                                "-outform DER | base64 -w0").strip()
        published[member] = published_dkim_record(host, member)
        assert published[member] == f"v=DKIM1; k=rsa; p={der}", member
    assert len(set(published.values())) == 3  # each member signs with its own key
