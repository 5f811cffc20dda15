"""The lab DNS configuration and the record comparison of `dns check` (pure logic)."""

from __future__ import annotations

import pytest

from coophost.dns.ops import (
    Answer,
    check,
    compare,
    dnsmasq_config,
    dnsmasq_line,
    normalise,
    parse_nameserver,
)
from coophost.dns.records import make_record
from coophost.errors import ConfigError, UsageError

LONG_KEY = "v=DKIM1; k=rsa; p=" + "A" * 392  # longer than one 255-byte TXT string


@pytest.mark.parametrize(("record", "line"), [
    (make_record("ada.test", "MX", "10 h1.lab.test."), "mx-host=ada.test,h1.lab.test,10"),
    (make_record("h1.lab.test", "A", "172.18.0.4", 60), "host-record=h1.lab.test,172.18.0.4,60"),
    (make_record("ada.test", "TXT", "v=spf1 mx -all"), 'txt-record=ada.test,"v=spf1 mx -all"'),
    (make_record("_dmarc.ada.test", "TXT", 'a "quoted" \\ value'),
     'txt-record=_dmarc.ada.test,"a \\"quoted\\" \\\\ value"'),
    (make_record("www.ada.test", "CNAME", "h1.lab.test.", 300),
     "cname=www.ada.test,h1.lab.test,300"),
])
def test_dnsmasq_line_per_type(record, line):
    assert dnsmasq_line(record) == line


def test_long_txt_is_served_as_several_strings_that_join_back():
    record = make_record("coophost._domainkey.ada.test", "TXT", LONG_KEY)
    line = dnsmasq_line(record)
    parts = line.split(",", 1)[1].split('","')
    assert len(parts) == 2
    assert "".join(p.strip('"') for p in parts) == LONG_KEY


def test_names_the_lab_already_serves_are_skipped():
    records = [make_record("h1.lab.test", "A", "172.18.0.4"),
               make_record("h9.other.test", "A", "172.18.0.9"),
               make_record("ada.test", "MX", "10 h1.lab.test.")]
    config = dnsmasq_config(records, served=["h1.lab.test"])
    assert "host-record=h1.lab.test" not in config
    assert "host-record=h9.other.test,172.18.0.9" in config
    assert "mx-host=ada.test,h1.lab.test,10" in config


def test_types_dnsmasq_cannot_serve_are_refused():
    with pytest.raises(ConfigError, match="cannot serve CAA"):
        dnsmasq_line(make_record("ada.test", "CAA", '0 issue "lab.test"'))


def test_non_ascii_txt_is_refused():
    with pytest.raises(ConfigError, match="printable ASCII"):
        dnsmasq_line(make_record("ada.test", "TXT", "caf\u00e9"))


SPF = make_record("ada.test", "TXT", "v=spf1 mx -all")
MX = make_record("ada.test", "MX", "10 h1.lab.test.")
DKIM = make_record("coophost._domainkey.ada.test", "TXT", LONG_KEY)


def test_compare_statuses():
    answers = {
        ("ada.test.", "TXT"): Answer(frozenset({"v=spf1 mx -all", "google-site-verification=x"})),
        ("ada.test.", "MX"): Answer(frozenset({"10 h2.lab.test."})),
        ("coophost._domainkey.ada.test.", "TXT"): Answer(frozenset(), "no such name"),
    }
    found = {f.record.type + " " + f.record.name: f for f in compare([SPF, MX, DKIM], answers)}
    assert found["TXT ada.test."].status == "ok"  # other TXT records beside SPF are fine
    assert found["MX ada.test."].status == "differs"
    assert found["MX ada.test."].answered == ("10 h2.lab.test.",)
    assert found["TXT coophost._domainkey.ada.test."].status == "missing"


def test_compare_query_failure_is_an_error_not_missing():
    [finding] = compare([MX], {("ada.test.", "MX"): Answer(frozenset(), "query failed: timeout")})
    assert finding.status == "error"
    assert "timeout" in finding.detail


def test_check_asks_each_name_and_type_once_and_joins_txt_strings():
    asked: list[tuple[str, str]] = []
    spf_other = make_record("ada.test", "TXT", "something else")

    def ask(name: str, rtype: str) -> Answer:
        asked.append((name, rtype))
        if rtype == "TXT" and name.startswith("coophost."):
            return Answer(frozenset({normalise("TXT", DKIM.rdata)}))
        return Answer(frozenset({"v=spf1 mx -all"}))

    findings = check([SPF, spf_other, DKIM], ask)
    assert asked == [("ada.test.", "TXT"), ("coophost._domainkey.ada.test.", "TXT")]
    assert [f.status for f in findings] == ["ok", "differs", "ok"]
    assert normalise("TXT", DKIM.rdata) == LONG_KEY


@pytest.mark.parametrize(("text", "parsed"), [
    ("127.0.0.1", ("127.0.0.1", 53)), ("127.0.0.1:5353", ("127.0.0.1", 5353)),
    ("[::1]:53", ("::1", 53)), ("::1", ("::1", 53)),
])
def test_parse_nameserver(text, parsed):
    assert parse_nameserver(text) == parsed


@pytest.mark.parametrize("text", ["ns1.example", "127.0.0.1:0", "127.0.0.1:x", "1.2.3.4; id"])
def test_parse_nameserver_refuses(text):
    with pytest.raises(UsageError, match="--nameserver"):
        parse_nameserver(text)
