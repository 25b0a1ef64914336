"""The reason catalog: every entry renders in English and German, and its codes agree with each other."""

from __future__ import annotations

import re
import string

import pytest

from mailwarden import catalog
from mailwarden.catalog import CATALOG, LANGS, Reason

CORE = [
    "client.dnsbl",
    "client.dynamic_rdns",
    "client.no_rdns",
    "client.fcrdns_mismatch",
    "helo.invalid",
    "sender.domain_missing",
    "sender.mx_ip_literal",
    "sender.null_mx",
    "sender.no_mail_host",
    "sender.spf_fail",
    "rcpt.unknown_user",
    "rcpt.relay_denied",
    "rcpt.mailbox_full",
    "msg.too_big",
    "msg.virus",
    "msg.spam",
    "msg.macro",
    "msg.dangerous_attachment",
    "msg.dmarc_reject",
    "protocol.bare_lf",
    "protocol.violation",
    "greylisted",
    "rate_limited",
    "infra.dns_tempfail",
    "infra.scanner_unavailable",
    "infra.storage",
    "infra.downstream",
    "delivered",
    "delivered.junk",
    "access.retrieved",
    "access.deleted",
]

ENTRIES = sorted(CATALOG.values(), key=lambda r: r.code)


def test_the_core_set_of_design_md_is_in_the_catalog() -> None:
    assert sorted(set(CORE) - set(CATALOG)) == []


def _values(reason: Reason) -> dict[str, str]:
    return {name: f"<{name}>" for name in reason.params}


@pytest.mark.parametrize("reason", ENTRIES, ids=[r.code for r in ENTRIES])
def test_every_entry_renders_in_every_language_with_all_its_placeholders(reason: Reason) -> None:
    values = _values(reason)
    texts = [reason.reply] + [
        getattr(reason, part)[lang] for part in ("title", "explanation", "remedy") for lang in LANGS
    ]
    for template in texts:
        assert template.strip(), f"{reason.code}: an empty text"
        rendered = catalog.render(template, reason.code, values)
        assert "(unknown)" not in rendered
        assert not re.search(r"[{}]", rendered), f"{reason.code}: unrendered braces in {rendered!r}"
        for name in (f for _, f, _, _ in string.Formatter().parse(template) if f):
            assert f"<{name}>" in rendered


@pytest.mark.parametrize("reason", ENTRIES, ids=[r.code for r in ENTRIES])
def test_reply_code_and_enhanced_code_agree(reason: Reason) -> None:
    assert re.fullmatch(r"[245]\.\d{1,3}\.\d{1,3}", reason.enhanced), reason.enhanced
    assert str(reason.smtp_code)[0] == reason.enhanced[0]
    assert reason.temporary == (400 <= reason.smtp_code < 500)
    assert reason.permanent == (reason.smtp_code >= 500)
    assert reason.actor in ("sender", "recipient", "provider", "none")


@pytest.mark.parametrize("reason", [r for r in ENTRIES if r.code.startswith("infra.")], ids=lambda r: r.code)
def test_our_own_failures_are_never_permanent(reason: Reason) -> None:
    assert reason.temporary


def test_a_missing_value_renders_visibly_instead_of_crashing() -> None:
    assert catalog.render("Mailbox {recipient} is gone.", "rcpt.unknown_user", {}) == "Mailbox (unknown) is gone."


def test_stranger_values_are_made_printable() -> None:
    rendered = catalog.render("Mailbox {recipient}.", "rcpt.unknown_user", {"recipient": "a\r\nb\x00"})
    assert rendered == "Mailbox a\\x0d\\x0ab\\x00."


def test_an_unknown_code_names_the_catalog() -> None:
    with pytest.raises(KeyError, match="catalog"):
        catalog.get("no.such.reason")
