"""Issue 7 scenarios through the real checks: DNS test zones (NSD + rbldnsd) and the real clamd and
rspamd. Each mail is played through `mailwarden serve`, then traced and explained with the command
line; the verdict must name the cause, who must act and the key facts. (Greylisted, then accepted
on the retry: tests/unit/test_clock_driven_checks.py, where the clock is moved instead of waited for.)
"""

from __future__ import annotations

import json
import smtplib
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.test_network_checks import ALL_CHECKS
from tests.support.dns import CLIENTS, DOMAINS, DnsServers, gateway_config, running_dns
from tests.support.mailwarden import Mailwarden, running
from tests.support.scanners import EICAR, GTUBE, Clamd, Rspamd
from tests.support.smtp import events_of, send

pytestmark = pytest.mark.integration


def explained(gateway: Mailwarden, ref: str, lang: str = "en") -> dict[str, Any]:
    events_of(gateway, ref, "disconnect")  # the connection's events are committed
    verdict: dict[str, Any] = json.loads(gateway.cli("explain", ref, "--lang", lang, "--format", "json").stdout)
    return verdict


@pytest.fixture(scope="module")
def dns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DnsServers]:
    with running_dns(tmp_path_factory.mktemp("dns")) as servers:
        yield servers


@pytest.fixture(scope="module")
def checked(tmp_path_factory: pytest.TempPathFactory, dns: DnsServers) -> Iterator[Mailwarden]:
    with running(tmp_path_factory.mktemp("mw"), gateway_config(dns, ALL_CHECKS)) as instance:
        yield instance


@pytest.mark.parametrize(
    ("client", "sender", "reason", "facts"),
    [
        (CLIENTS["pbl"], f"alice@{DOMAINS['good']}", "client.dnsbl", ["zen.dnsbl.test", CLIENTS["pbl"]]),
        (CLIENTS["generic"], f"alice@{DOMAINS['good']}", "client.dynamic_rdns", ["127-0-0-13.dyn.isp.test"]),
        (CLIENTS["clean"], f"alice@{DOMAINS['mx_ip_literal']}", "sender.mx_ip_literal", ["iplit.test", "1.2.3.4"]),
    ],
    ids=[
        "in-house server on a blocklisted dynamic range",
        "server with a generic dynamic hostname",
        "sender domain with an IP as MX",
    ],
)
def test_refusal_by_a_dns_check_is_explained_with_its_finding(
    checked: Mailwarden, client: str, sender: str, reason: str, facts: list[str]
) -> None:
    attempt = send(checked, client, "mail.sender.test", sender)
    ref = attempt.last.ref
    assert ref is not None and attempt.last.code >= 500, attempt.replies
    for lang in ("en", "de"):
        verdict = explained(checked, ref, lang)
        assert (verdict["status"], verdict["reason"], verdict["responsibility"]) == ("rejected", reason, "sender")
        for fact in facts:
            assert fact in verdict["summary"] + verdict["remedy"], (fact, verdict["summary"])
    (message,) = json.loads(
        checked.cli("trace", "--client-ip", f"{client}/32", "--ref", ref, "--format", "json").stdout
    )
    assert message["client_ip"] == client


@pytest.fixture(scope="module")
def scanned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mailwarden]:
    clamd = Clamd(tmp_path_factory.mktemp("clamd")).start()
    rspamd = Rspamd(tmp_path_factory.mktemp("rspamd")).start()
    overrides = {
        "scan.clamd": {"address": str(clamd.socket)},
        "scan.spam": {"engine": "rspamd", "address": rspamd.address, "tag_score": 4.0, "reject_score": 15.0},
    }
    try:
        with running(tmp_path_factory.mktemp("mw"), overrides) as instance:
            yield instance
    finally:
        rspamd.stop()
        clamd.stop()


@pytest.mark.parametrize(
    ("body", "reason", "fact"),
    [(EICAR, "msg.virus", "Eicar-Test-Signature"), (GTUBE.encode(), "msg.spam", "GTUBE")],
    ids=["virus", "spam"],
)
def test_content_refusal_is_explained_with_the_finding(
    scanned: Mailwarden, body: bytes, reason: str, fact: str
) -> None:
    mail = (
        b"From: alice@sender.test\r\nSubject: scan me\r\nMessage-ID: <%s@sender.test>\r\n\r\n" % reason.encode()
        + body
        + b"\r\n"
    )
    with smtplib.SMTP("127.0.0.1", scanned.smtp_port, timeout=120) as client:
        client.ehlo("mail.sender.test")
        client.mail("alice@sender.test")
        client.rcpt("bob@example.test")
        code, text = client.data(mail)
    assert code >= 500, text
    ref = text.decode().rsplit("ref=", 1)[1].split()[0]
    verdict = explained(scanned, ref, "de")
    assert (verdict["status"], verdict["reason"], verdict["responsibility"]) == ("rejected", reason, "sender")
    assert fact in verdict["summary"] + " ".join(verdict["evidence"])
