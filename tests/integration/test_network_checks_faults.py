"""DNS outages, greylisting and rate limits: temporary answers, never a 5xx, never a silent accept."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from tests.support.dns import CLIENTS, DOMAINS, gateway_config, running_dns
from tests.support.mailwarden import Mailwarden, running
from tests.support.smtp import events_of, send

pytestmark = pytest.mark.integration

GOOD = f"alice@{DOMAINS['good']}"

# check -> (a client and sender it has not seen before the outage, stage, code, enhanced, reason)
OUTAGE = {
    "dnsbl": (CLIENTS["sbl"], GOOD, "rcpt", 451, "4.4.3", "infra.dns_tempfail"),
    "rdns": (CLIENTS["generic"], GOOD, "rcpt", 450, "4.7.25", "infra.dns_tempfail"),
    "sender_domain": (CLIENTS["clean"], f"a@{DOMAINS['implicit_mx']}", "mail", 450, "4.1.8", "infra.dns_tempfail"),
    "spf": (CLIENTS["clean"], f"a@{DOMAINS['spf_softfail']}", "mail", 451, "4.7.24", "sender.spf_temperror"),
}


def test_dns_stopped_mid_test_makes_every_dns_check_answer_4xx(tmp_path_factory: pytest.TempPathFactory) -> None:
    with running_dns(tmp_path_factory.mktemp("dns")) as dns, ExitStack() as stack:
        gateways: dict[str, Mailwarden] = {}
        for check in [*OUTAGE, "fail_open"]:
            order = ["recipients", "spf"] if check == "fail_open" else ["recipients", check]
            extra = {"dns": {"fail_open": True}} if check == "fail_open" else {}
            root = tmp_path_factory.mktemp(check)
            gateways[check] = stack.enter_context(running(root, gateway_config(dns, order, **extra)))
        for gateway in gateways.values():  # all well while DNS answers
            assert send(gateway, CLIENTS["clean"], "mail.good.test", GOOD).accepted

        dns.stop_server("nsd")
        dns.stop_server("rbldnsd")

        for check, (client, sender, stage, code, enhanced, reason) in OUTAGE.items():
            reply = send(gateways[check], client, "mail.example.org", sender).last
            assert (reply.stage, reply.code, reply.enhanced) == (stage, code, enhanced), (check, reply)
            assert reply.ref is not None
            events = events_of(gateways[check], reply.ref, "tempfail")
            assert [e["reason"] for e in events if e["kind"] == "tempfail"] == [reason], check
        # fail-open: accepted, but logged and recorded
        fail_open = gateways["fail_open"]
        attempt = send(fail_open, CLIENTS["clean"], "mail.good.test", f"a@{DOMAINS['spf_neutral']}")
        assert attempt.accepted, attempt.replies
        assert "fail_open is on" in fail_open.log.read_text()
        ref = attempt.last.ref
        assert ref is not None
        (mail,) = [e for e in events_of(fail_open, ref, "accept") if e["kind"] == "mail"]
        (spf,) = [c for c in mail["detail"]["checks"] if c["check"] == "spf"]
        assert spf["reason"] == "infra.dns_tempfail" and spf["detail"]["fail_open"] is True


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mailwarden]:
    with running_dns(tmp_path_factory.mktemp("dns")) as dns:
        config = gateway_config(
            dns,
            ["ratelimit", "recipients", "greylist"],
            ratelimit={"connections_per_minute": 3, "messages_per_minute": 2},
            greylist={"exempt_networks": ["127.0.0.10/32", "127.0.0.60/32"]},
        )
        with running(tmp_path_factory.mktemp("mw"), config, users=("bob@example.test", "carol@example.test")) as gw:
            yield gw


def test_greylisting_defers_the_first_attempt_and_says_when_to_retry(limited: Mailwarden) -> None:
    """The retry after the delay passes: tests/unit/test_clock_driven_checks.py moves the clock for it."""
    client = "127.0.0.40"
    first = send(limited, client, "mail.example.org", "ann@example.org").last
    assert (first.stage, first.code, first.enhanced) == ("rcpt", 451, "4.7.1")
    assert "Greylisted" in first.sentence and "retry in 300 seconds" in first.sentence
    early = send(limited, "127.0.0.41", "mail.example.org", "ann@example.org").last  # same /24, same triplet
    assert (early.code, early.enhanced) == (451, "4.7.1")
    assert first.ref is not None and early.ref is not None
    (tempfail,) = [e for e in events_of(limited, first.ref, "tempfail") if e["kind"] == "tempfail"]
    (again,) = [e for e in events_of(limited, early.ref, "tempfail") if e["kind"] == "tempfail"]
    assert tempfail["reason"] == again["reason"] == "greylisted"
    assert tempfail["detail"]["network"] == again["detail"]["network"] == "127.0.0.0/24"
    assert again["detail"]["first_seen"] == tempfail["detail"]["first_seen"] and again["detail"]["attempts"] == 2


def test_greylisting_exempts_configured_networks(limited: Mailwarden) -> None:
    assert send(limited, CLIENTS["clean"], "mail.good.test", "zed@example.org").accepted


def test_too_many_connections_per_minute_get_421(limited: Mailwarden) -> None:
    client = "127.0.0.50"
    replies = [send(limited, client, "mail.good.test", "").replies[0] for _ in range(4)]
    assert [r.code for r in replies[:3]] == [220, 220, 220]
    assert (replies[3].code, replies[3].enhanced) == (421, "4.7.0")
    assert "Too many connections from 127.0.0.50" in replies[3].sentence


def test_too_many_messages_per_minute_get_451(limited: Mailwarden) -> None:
    client = "127.0.0.60"  # exempt from greylisting
    codes = []
    for _ in range(3):
        reply = send(limited, client, "mail.good.test", GOOD).last
        codes.append((reply.stage, reply.code, reply.enhanced))
    assert codes[:2] == [("data", 250, "2.0.0")] * 2
    assert codes[2] == ("mail", 451, "4.7.0")
