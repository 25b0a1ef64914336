"""Network and sender checks in the session, against real NSD and rbldnsd on loopback.

Clients connect from different 127.0.0.x addresses (their PTRs and listings are in
tests/support/dns.py) with sender domains that have a good MX, an IP-literal MX, a null MX, no
records, and SPF pass/fail/softfail/temperror. Each case checks the reply code, the enhanced
code, the reason recorded in the events and the key words of the text.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.dns import CLIENTS, DOMAINS, DnsServers, gateway_config, running_dns
from tests.support.mailwarden import Mailwarden, running
from tests.support.smtp import events_of, send, stored_message

pytestmark = pytest.mark.integration

ALL_CHECKS = ["ratelimit", "dnsbl", "rdns", "helo", "recipients", "sender_domain", "spf", "size"]


@pytest.fixture(scope="module")
def dns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DnsServers]:
    with running_dns(tmp_path_factory.mktemp("dns")) as servers:
        yield servers


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, dns: DnsServers) -> Iterator[Mailwarden]:
    with running(tmp_path_factory.mktemp("mw"), gateway_config(dns, ALL_CHECKS)) as instance:
        yield instance


CLEAN = CLIENTS["clean"]
GOOD_SENDER = f"alice@{DOMAINS['good']}"

REFUSALS = [
    # (case, client, helo, sender, stage, code, enhanced, reason, key words)
    (
        "client listed in the PBL",
        CLIENTS["pbl"], "mail.pbl.test", GOOD_SENDER, "rcpt", 554, "5.7.1", "client.dnsbl",
        ["127.0.0.11", "zen.dnsbl.test", "dynamic or end-user address range", "provider's mail server",
         "query/ip/127.0.0.11"],
    ),
    (
        "client listed in the SBL",
        CLIENTS["sbl"], "mail.sbl.test", GOOD_SENDER, "rcpt", 554, "5.7.1", "client.dnsbl",
        ["zen.dnsbl.test", "Spamhaus SBL", "SBL12345"],
    ),
    (
        "client listed in the PBL, sending for a domain without records: the client is the cause",
        CLIENTS["pbl"], "mail.pbl.test", f"alice@{DOMAINS['missing']}", "rcpt", 554, "5.7.1", "client.dnsbl",
        ["127.0.0.11", "zen.dnsbl.test", "provider's mail server"],
    ),
    (
        "client with a generic PTR",
        CLIENTS["generic"], "mail.isp.test", GOOD_SENDER, "rcpt", 550, "5.7.25", "client.dynamic_rdns",
        ["127-0-0-13.dyn.isp.test", "generic hostname", "provider's mail server"],
    ),
    (
        "client without PTR",
        CLIENTS["no_ptr"], "mail.example.org", GOOD_SENDER, "rcpt", 550, "5.7.25", "client.no_rdns",
        ["127.0.0.14", "no reverse DNS"],
    ),
    (
        "client whose PTR does not resolve back",
        CLIENTS["fcrdns_mismatch"], "mismatch.isp.test", GOOD_SENDER, "rcpt", 550, "5.7.25",
        "client.fcrdns_mismatch", ["mismatch.isp.test", "does not resolve back"],
    ),
    (
        "sender domain with an IP address as MX",
        CLEAN, "mail.good.test", f"alice@{DOMAINS['mx_ip_literal']}", "mail", 550, "5.1.8", "sender.mx_ip_literal",
        ["iplit.test. MX 10 1.2.3.4.", "RFC 5321 section 5.1", "RFC 2181 section 10.3"],
    ),
    (
        "sender domain with a null MX",
        CLEAN, "mail.good.test", f"alice@{DOMAINS['null_mx']}", "mail", 550, "5.7.27", "sender.null_mx",
        ["nullmx.test", "null MX", "RFC 7505"],
    ),
    (
        "sender domain without any records",
        CLEAN, "mail.good.test", f"alice@{DOMAINS['missing']}", "mail", 550, "5.1.8", "sender.domain_missing",
        ["missing.test", "no MX, A or AAAA record"],
    ),
    (
        "sender domain whose MX hosts do not resolve",
        CLEAN, "mail.good.test", f"alice@{DOMAINS['no_mail_host']}", "mail", 550, "5.1.8", "sender.no_mail_host",
        ["ghost.nohost.test", "phantom.nohost.test", "do not resolve"],
    ),
    (
        "sender domain whose DNS fails",
        CLEAN, "mail.good.test", f"alice@{DOMAINS['dns_failure']}", "mail", 450, "4.1.8", "infra.dns_tempfail",
        ["unserved.example", "Temporary DNS failure"],
    ),
    (
        "SPF fail",
        CLEAN, "mail.good.test", f"alice@{DOMAINS['spf_fail']}", "mail", 550, "5.7.23", "sender.spf_fail",
        ["spf-fail.test", "127.0.0.10", "-all"],
    ),
    (
        "SPF temperror",
        CLEAN, "mail.good.test", f"alice@{DOMAINS['spf_temperror']}", "mail", 451, "4.7.24", "sender.spf_temperror",
        ["spf-temperror.test", "temporarily"],
    ),
    (
        "HELO without a dot",
        CLEAN, "localhost", GOOD_SENDER, "rcpt", 550, "5.7.1", "helo.invalid", ["localhost", "fully qualified"],
    ),
    (
        "HELO with a bare IP address",
        CLEAN, "127.0.0.10", GOOD_SENDER, "rcpt", 550, "5.7.1", "helo.invalid", ["[127.0.0.10]", "brackets"],
    ),
    (
        "HELO claiming our own name",
        CLEAN, "mx.example.test", GOOD_SENDER, "rcpt", 550, "5.7.1", "helo.invalid", ["our own name"],
    ),
    (
        "HELO claiming our own address",
        CLEAN, "[127.0.0.1]", GOOD_SENDER, "rcpt", 550, "5.7.1", "helo.invalid", ["our own address"],
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("client", "helo", "sender", "stage", "code", "enhanced", "reason", "words"),
    [case[1:] for case in REFUSALS],
    ids=[case[0] for case in REFUSALS],
)
def test_refusal_names_the_cause_with_the_right_codes(
    gateway: Mailwarden,
    client: str,
    helo: str,
    sender: str,
    stage: str,
    code: int,
    enhanced: str,
    reason: str,
    words: list[str],
) -> None:
    attempt = send(gateway, client, helo, sender)
    reply = attempt.last
    assert (reply.stage, reply.code, reply.enhanced) == (stage, code, enhanced), attempt.replies
    for word in words:
        assert word in reply.sentence, (word, reply.sentence)
    assert reply.ref is not None
    events = events_of(gateway, reply.ref, "reject" if code >= 500 else "tempfail")
    (refusal,) = [e for e in events if e["kind"] in ("reject", "tempfail")]
    assert (refusal["reason"], refusal["smtp_code"], refusal["enhanced_code"]) == (reason, code, enhanced)


ACCEPTED = [
    # (case, client, helo, sender, expected Authentication-Results part)
    ("clean client, good domain, SPF pass", CLEAN, "mail.good.test", GOOD_SENDER, "spf=pass"),
    ("domain with only an A record", CLEAN, "mail.good.test", f"bob@{DOMAINS['implicit_mx']}", "spf=pass"),
    ("SPF softfail is only tagged", CLEAN, "mail.good.test", f"a@{DOMAINS['spf_softfail']}", "spf=softfail"),
    ("SPF neutral is only tagged", CLEAN, "mail.good.test", f"a@{DOMAINS['spf_neutral']}", "spf=neutral"),
    ("SPF permerror is only tagged", CLEAN, "mail.good.test", f"a@{DOMAINS['spf_permerror']}", "spf=permerror"),
    ("the null sender is allowed", CLEAN, "mail.good.test", "", "smtp.helo=mail.good.test"),
    ("SBL-listed client on the DNSWL", CLIENTS["dnswl"], "mail.dnswl.test", GOOD_SENDER, "spf=pass"),
    ("a list error is not a listing", CLIENTS["list_error"], "mail.listerror.test", GOOD_SENDER, "spf=pass"),
]


@pytest.mark.parametrize(("client", "helo", "sender", "auth"), [c[1:] for c in ACCEPTED], ids=[c[0] for c in ACCEPTED])
def test_accepted_mail_records_spf_in_authentication_results(
    gateway: Mailwarden, client: str, helo: str, sender: str, auth: str
) -> None:
    attempt = send(gateway, client, helo, sender)
    assert attempt.accepted, attempt.replies
    head = stored_message(gateway, attempt).split(b"\r\n\r\n", 1)[0].decode()
    assert "Authentication-Results: mx.example.test;" in head
    assert auth in head


def test_the_allowlisted_client_is_recorded_as_such(gateway: Mailwarden) -> None:
    attempt = send(gateway, CLIENTS["dnswl"], "mail.dnswl.test", GOOD_SENDER)
    assert attempt.accepted
    ref = attempt.last.ref
    assert ref is not None
    events = events_of(gateway, ref, "accept")
    (connect,) = [e for e in events if e["kind"] == "connect"]
    (dnsbl,) = [c for c in connect["detail"]["checks"] if c["check"] == "dnsbl"]
    assert dnsbl["reason"] == "client.allowlisted"
    assert dnsbl["detail"]["listings"][0]["meaning"] == "a spam source (Spamhaus SBL)"


def test_the_verified_client_name_reaches_the_received_header(gateway: Mailwarden) -> None:
    stored = stored_message(gateway, send(gateway, CLEAN, "mail.good.test", GOOD_SENDER))
    assert b"(mail.good.test [127.0.0.10])" in stored.split(b"\r\n\r\n", 1)[0]


def check_sender(gateway: Mailwarden, *args: str) -> tuple[int, str]:
    done = gateway.cli("check-sender", *args, check=False)
    assert not done.stderr.strip() or "Traceback" not in done.stderr, done.stderr
    return done.returncode, done.stdout


def test_check_sender_reports_a_good_domain_with_its_mail_hosts(gateway: Mailwarden) -> None:
    status, text = check_sender(gateway, DOMAINS["good"])
    assert status == 0
    for words in (
        "MX records:",
        "10 mail.good.test.  ->  127.0.0.10",
        "SPF record: v=spf1 ip4:127.0.0.0/24 -all",
        "Forward-confirmed: yes, mail.good.test resolves back to 127.0.0.10",
        "SPF for this host: pass",
        "Listed on: none",
        "no problems found",
    ):
        assert words in text, (words, text)


def test_check_sender_explains_an_ip_literal_mx_as_the_gateway_would(gateway: Mailwarden) -> None:
    status, text = check_sender(gateway, DOMAINS["mx_ip_literal"])
    assert status == 1
    assert "an IP address written as a hostname" in text
    assert "550 5.1.8 The MX record of the sender domain iplit.test is iplit.test. MX 10 1.2.3.4." in text
    assert "What to do: The sender's DNS administrator must change the MX record" in text


def test_check_sender_json_for_a_listed_address(gateway: Mailwarden) -> None:
    import json

    status, out = check_sender(gateway, CLIENTS["pbl"], "--format", "json")
    report = json.loads(out)
    assert status == 1 and report["ok"] is False
    assert report["confirmed_name"] == "mail.pbl.test"
    (listing,) = report["dnsbl"]["listings"]
    assert listing["zone"] == "zen.dnsbl.test" and "PBL" in listing["meaning"]
    assert [f["reason"] for f in report["findings"]] == ["client.dnsbl"]


def test_check_sender_flags_a_domain_whose_spf_excludes_its_own_mx(gateway: Mailwarden) -> None:
    import json

    status, out = check_sender(gateway, DOMAINS["spf_fail"], "--format", "json")
    report = json.loads(out)
    assert status == 1
    (host,) = report["hosts"]
    assert host["spf"]["result"] == "fail" and host["spf"]["record"] == "v=spf1 ip4:192.0.2.0/24 -all"
    assert report["findings"][0]["reason"] == "sender.spf_fail"
