"""mailwarden as Postfix's policy delegation service: the envelope checks without a milter (issue 15).

A private Postfix asks `mailwarden serve` over `check_policy_service` at every RCPT (and once
more at the end of the data, which gives our events its queue id), as docs/postfix.md
configures it. Refusals reach the client with our code, enhanced code, sentence and ref behind
Postfix's "Recipient address rejected:"; a DNS fault is a DEFER_IF_PERMIT (Postfix answers 450);
with mailwarden stopped Postfix answers its `smtpd_policy_service_default_action` (451 4.3.5) and
takes nothing. The content checks need the milter: the policy protocol never sees a message.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.dns import CLIENTS, DOMAINS, DnsServers, gateway_config, running_dns
from tests.support.mailwarden import Mailwarden, running
from tests.support.net import free_port
from tests.support.postfix import Postfix, running_postfix
from tests.support.smtp import Attempt, events_of, send

pytestmark = pytest.mark.integration

CLEAN = CLIENTS["clean"]
SENDER = f"alice@{DOMAINS['good']}"


def policy_settings(port: int) -> dict[str, str]:
    service = f"check_policy_service inet:127.0.0.1:{port}"
    return {
        "smtpd_recipient_restrictions": f"{service}, permit_mynetworks, reject_unauth_destination",
        "smtpd_end_of_data_restrictions": service,
        "smtpd_policy_service_timeout": "60s",
    }


@pytest.fixture(scope="module")
def dns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DnsServers]:
    with running_dns(tmp_path_factory.mktemp("dns")) as servers:
        yield servers


POLICY_PORT = free_port()


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory, dns: DnsServers) -> Iterator[Mailwarden]:
    overrides = gateway_config(
        dns, ["dnsbl", "sender_domain", "recipients", "size"], policy={"listen": [f"127.0.0.1:{POLICY_PORT}"]}
    )
    with running(tmp_path_factory.mktemp("mw"), overrides) as instance:
        yield instance


@pytest.fixture(scope="module")
def postfix(policy: Mailwarden) -> Iterator[Postfix]:
    with running_postfix(local_domains=["example.test"], settings=policy_settings(POLICY_PORT)) as instance:
        yield instance


def through_postfix(
    policy: Mailwarden,
    postfix: Postfix,
    *,
    client: str = CLEAN,
    sender: str = SENDER,
    rcpt: str = "bob@example.test",
) -> Attempt:
    return send(policy, client, "mail.good.test", sender, rcpt, port=postfix.smtp_port)


def recorded(policy: Mailwarden, ref: str, kind: str) -> dict[str, Any]:
    (event,) = [e for e in events_of(policy, ref, kind) if e["kind"] == kind]
    return event


def test_dnsbl_listed_client_is_refused_with_554_our_sentence_and_ref(policy: Mailwarden, postfix: Postfix) -> None:
    attempt = through_postfix(policy, postfix, client=CLIENTS["pbl"])
    reply = attempt.last
    assert (reply.stage, reply.code, reply.enhanced) == ("rcpt", 554, "5.7.1"), attempt.replies
    assert "Recipient address rejected:" in reply.sentence  # Postfix's words, then ours
    for words in ("127.0.0.11", "zen.dnsbl.test", "dynamic or end-user address range", "provider's mail server"):
        assert words in reply.sentence
    assert reply.ref is not None and reply.text.endswith(f"ref={reply.ref}")
    event = recorded(policy, reply.ref, "reject")
    assert (event["source"], event["reason"], event["client_ip"]) == ("policy", "client.dnsbl", CLIENTS["pbl"])


def test_unknown_recipient_gets_550_5_1_1_with_ref(policy: Mailwarden, postfix: Postfix) -> None:
    attempt = through_postfix(policy, postfix, rcpt="nobody@example.test")
    reply = attempt.last
    assert (reply.stage, reply.code, reply.enhanced) == ("rcpt", 550, "5.1.1"), attempt.replies
    assert reply.ref is not None and reply.text.endswith(f"ref={reply.ref}")
    event = recorded(policy, reply.ref, "reject")
    assert (event["source"], event["reason"], event["recipient"]) == (
        "policy",
        "rcpt.unknown_user",
        "nobody@example.test",
    )


def test_a_dns_fault_is_a_defer_if_permit_postfix_answers_450_with_our_sentence(
    policy: Mailwarden, postfix: Postfix
) -> None:
    attempt = through_postfix(policy, postfix, sender=f"alice@{DOMAINS['dns_failure']}")
    reply = attempt.last
    assert (reply.stage, reply.code) == ("rcpt", 450), attempt.replies  # Postfix's defer code
    assert reply.ref is not None
    event = recorded(policy, reply.ref, "tempfail")
    assert (event["source"], event["detail"]["stage"], event["enhanced_code"]) == ("policy", "mail", "4.1.8")
    # Our sentence and ref; the enhanced code's detail Postfix fits to the RCPT context (a sender's 4.1.8 is 4.1.2).
    assert reply.enhanced == "4.1.2"
    assert reply.text.endswith(event["reply"].split(" ", 2)[2])


def test_clean_mail_is_delivered_and_the_end_of_data_request_gives_our_events_the_queue_id(
    policy: Mailwarden, postfix: Postfix
) -> None:
    before = len(postfix.delivered())
    attempt = through_postfix(policy, postfix)
    assert attempt.accepted, attempt.replies
    queue_id = attempt.last.text.rsplit(" ", 1)[-1]
    postfix.wait_delivered(before + 1)
    (accept,) = [e for e in policy.events() if e["kind"] == "accept" and e["queue_id"] == queue_id]
    assert accept["source"] == "policy" and accept["detail"]["recipients"] == ["bob@example.test"]
    kinds = [e["kind"] for e in events_of(policy, accept["ref"], "accept")]
    assert kinds[:4] == ["connect", "helo", "mail", "rcpt"], kinds


def test_with_mailwarden_stopped_postfix_answers_its_default_action_and_takes_nothing(tmp_path: Path) -> None:
    port = free_port()
    with (
        running(tmp_path / "mw", {"policy": {"listen": [f"127.0.0.1:{port}"]}}) as policy,
        running_postfix(local_domains=["example.test"], settings=policy_settings(port)) as postfix,
    ):
        policy.stop()
        attempt = send(policy, "127.0.0.1", "client.sender.test", "alice@good.test", port=postfix.smtp_port)
        assert (attempt.last.stage, attempt.last.code) == ("rcpt", 451), attempt.replies
        assert attempt.last.text.startswith("4.3.5"), attempt.replies
        assert postfix.queue_empty()
        policy.start()
        assert send(policy, "127.0.0.1", "client.sender.test", "alice@good.test", port=postfix.smtp_port).accepted
