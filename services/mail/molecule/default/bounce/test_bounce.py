"""mail_suspended_mail: bounce, proven on the host after side_effect.yml switched it.

The scenario runs these with `verify bounce`, after tests/ passed with `accept` (there the
suspended member keeps receiving). Now every address of the suspended member's domains is
refused at RCPT time with 550 5.2.1, on 25 and on submission, while other members' mail,
including at a subdomain of a suspended domain, is still accepted. Logins stay refused.
"""

import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests"))
from test_default import run_client

SUSPENDED = [
    "dee@gamma.test",           # mailbox
    "DEE@Gamma.Test",           # any case
    "dee+tag@gamma.test",       # address extension
    "info@gamma.test",          # alias
    "dee@gamma-alt.test",       # mailbox at the member's other domain
    "info@gamma-alt.test",      # alias there
    "nobody@gamma.test",        # unknown address: same answer
]
ACTIVE = [
    "cy@beta.test",
    "cy@lists.gamma.test",      # another member's subdomain of a suspended domain
    "team@alpha-alt.test",
]


def rcpt_replies(host, port, connect="HOST", login=None, tls=True):
    """RCPT every test address in one session; return {address: (code, text)}."""
    result = run_client(host, f'''
        if {port} == 465:
            smtp = smtplib.SMTP_SSL(HOST, 465, context=CTX)
        else:
            smtp = smtplib.SMTP({connect}, {port})
            if {tls}:
                smtp.starttls(context=CTX)
        smtp.ehlo("client.example.org")
        if {login!r}:
            smtp.login({login!r}, password({login!r}))
        sender = {login!r} or "someone@example.org"
        code, text = smtp.mail(sender)
        assert code == 250, (code, text)
        for rcpt in {SUSPENDED + ACTIVE!r}:
            code, text = smtp.rcpt(rcpt)
            print(rcpt, code, text.decode())
        smtp.rset()
        smtp.quit()
    ''')
    assert result.rc == 0, result.stderr
    replies = {}
    for line in result.stdout.splitlines():
        rcpt, code, text = line.split(" ", 2)
        replies[rcpt] = (int(code), text)
    assert sorted(replies) == sorted(SUSPENDED + ACTIVE)
    return replies


def assert_bounced_and_accepted(replies):
    for rcpt in SUSPENDED:
        code, text = replies[rcpt]
        assert code == 550, (rcpt, code, text)
        assert text.startswith("5.2.1 ") and "Mailbox suspended" in text, (rcpt, text)
    for rcpt in ACTIVE:
        assert replies[rcpt][0] == 250, (rcpt, replies[rcpt])


@pytest.mark.parametrize("connect,tls", [("HOST", True), ('"127.0.0.1"', False)],
                         ids=["outside", "mynetworks"])
def test_port_25_refuses_suspended_domains(host, connect, tls):
    assert_bounced_and_accepted(rcpt_replies(host, 25, connect=connect, tls=tls))


@pytest.mark.parametrize("port", [587, 465])
def test_submission_refuses_suspended_domains(host, port):
    assert_bounced_and_accepted(rcpt_replies(host, port, login="ana@alpha.test"))


def test_table_lists_exactly_the_suspended_domains(host):
    table = host.check_output("postmap -s texthash:/etc/postfix/coophost/suspended")
    assert sorted(line.split("\t")[0] for line in table.splitlines()) == [
        "gamma-alt.test", "gamma.test"]


def test_suspended_member_still_cannot_log_in(host):
    result = run_client(host, '''
        login = "dee@gamma.test"
        try:
            imaplib.IMAP4_SSL(HOST, 993, ssl_context=CTX).login(login, password(login))
            print("imap accepted")
        except imaplib.IMAP4.error:
            print("imap refused")
        try:
            submit(login, login, "cy@beta.test", "x")
            print("smtp accepted")
        except smtplib.SMTPException:
            print("smtp refused")
    ''')
    assert result.rc == 0, result.stderr
    assert result.stdout.split() == ["imap", "refused", "smtp", "refused"]
