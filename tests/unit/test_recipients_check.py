"""The recipients check: our domains and mailboxes only, never an open relay, whatever the spelling."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mailwarden.checks.base import CheckContext, Recipient, Services, SessionInfo, Verdict
from mailwarden.checks.recipients import RecipientsCheck
from mailwarden.config import Config
from mailwarden.store import Store


@pytest.fixture
def services(tmp_path: Path, store: Store) -> Services:
    config = Config(
        mail={"domains": ["example.test", "example.org"], "postmaster": "admin@example.test"},  # type: ignore[arg-type]
        base_dir=tmp_path,
    )
    for address in ("bob@example.test", "admin@example.test", "carol@example.org"):
        store.add_mailbox(address, "hash")
    return Services(config=config, store=store, local_domains=frozenset(config.mail.domains))


def check(services: Services, address: str) -> Verdict | Recipient | None:
    ctx = CheckContext(services, SessionInfo(id="S", node="n", client_ip="192.0.2.1", client_port=1))
    return asyncio.run(RecipientsCheck(services.store).rcpt(ctx, address))


@pytest.mark.parametrize(
    "address",
    [
        "user%other.test@example.test",  # the percent hack
        '"user@other.test"@example.test',  # a quoted local part hiding a second address
        '"bob%other.test"@example.test',
        "user!other.test@example.test",  # a bang path
        "bob@[192.0.2.1]",  # an address literal
        "bob@[IPv6:2001:db8::1]",
        "bob@other.test",
        "bob@sub.example.test",
        "bob@example.test.other.test",
        "bob",  # no domain
        "victim@other.test",  # what is left of @example.test:victim@other.test once the route is dropped
    ],
)
def test_relay_tricks_are_refused_as_relaying(services: Services, address: str) -> None:
    verdict = check(services, address)
    assert isinstance(verdict, Verdict)
    assert (verdict.reason, verdict.code, verdict.enhanced_code) == ("rcpt.relay_denied", 554, "5.7.1")


@pytest.mark.parametrize(
    ("address", "mailbox"),
    [
        ("bob@example.test", "bob@example.test"),
        ("BOB@Example.TEST", "bob@example.test"),  # case does not matter
        ("bob@example.test.", "bob@example.test"),  # a trailing dot is the same domain
        ("bob+news@example.test", "bob@example.test"),  # sub-addressing
        ('"bob"@example.test', "bob@example.test"),  # a needlessly quoted local part
        ("carol@example.org", "carol@example.org"),
        ("postmaster", "admin@example.test"),  # RFC 5321 4.5.1: always accepted
        ("Postmaster@example.org", "admin@example.test"),
    ],
)
def test_local_spellings_resolve_to_the_mailbox(services: Services, address: str, mailbox: str) -> None:
    resolved = check(services, address)
    assert isinstance(resolved, Recipient)
    assert (resolved.address, resolved.mailbox) == (address, mailbox)


@pytest.mark.parametrize("address", ["nobody@example.test", "bob.smith@example.test", "+news@example.test"])
def test_an_unknown_mailbox_in_our_domain_is_550_5_1_1(services: Services, address: str) -> None:
    verdict = check(services, address)
    assert isinstance(verdict, Verdict)
    assert (verdict.reason, verdict.code, verdict.enhanced_code) == ("rcpt.unknown_user", 550, "5.1.1")
