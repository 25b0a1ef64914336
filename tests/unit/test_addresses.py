"""Envelope addresses: the MAIL FROM / RCPT TO argument parsed strictly, mailbox names normalized."""

from __future__ import annotations

import pytest

from mailwarden.addresses import (
    AddressError,
    LoginName,
    PathSyntaxError,
    login_name,
    normalize_mailbox,
    parse_path,
    split,
)


@pytest.mark.parametrize(
    ("argument", "mailbox", "params"),
    [
        ("FROM:<alice@sender.test>", "alice@sender.test", {}),
        ("from:<alice@sender.test>", "alice@sender.test", {}),
        (
            "FROM: <alice@sender.test> SIZE=1000 BODY=8BITMIME",
            "alice@sender.test",
            {"SIZE": "1000", "BODY": "8BITMIME"},
        ),
        ("FROM:<> SMTPUTF8", "", {"SMTPUTF8": None}),
        ("FROM:alice@sender.test", "alice@sender.test", {}),  # no angle brackets, as old software sends
        ("FROM:<@relay.test,@relay2.test:alice@sender.test>", "alice@sender.test", {}),  # the source route goes
        ('FROM:<"al ice"@sender.test>', '"al ice"@sender.test', {}),
        ('FROM:<"a\\"b"@sender.test>', '"a\\"b"@sender.test', {}),
        ("FROM:<alice@[192.0.2.1]>", "alice@[192.0.2.1]", {}),
        ("FROM:<alice@sender.test.>", "alice@sender.test.", {}),
        ("FROM:<ålice@bücher.test> SMTPUTF8", "ålice@bücher.test", {"SMTPUTF8": None}),
        ("FROM:<a@b.test> size=5", "a@b.test", {"SIZE": "5"}),
    ],
)
def test_well_formed_paths(argument: str, mailbox: str, params: dict[str, str | None]) -> None:
    path = parse_path(argument, "FROM", null_allowed=True)
    assert (path.mailbox, path.params) == (mailbox, params)


def test_postmaster_without_domain_is_a_recipient_but_nothing_else() -> None:
    assert parse_path("TO:<PostMaster>", "TO", postmaster_allowed=True).mailbox == "postmaster"
    with pytest.raises(PathSyntaxError):
        parse_path("TO:<bob>", "TO", postmaster_allowed=True)
    with pytest.raises(PathSyntaxError):
        parse_path("FROM:<postmaster>", "FROM")


@pytest.mark.parametrize(
    "argument",
    [
        "TO:",
        "TO:<>",  # the null path is a sender only
        "TO:<bob@@example.test>",
        "TO:<bob@example.test",
        "TO:bob@example.test>",
        "TO:<bob@example.test>x",
        "TO:<bob@example..test>",
        "TO:<bob@-example.test>",
        "TO:<.bob@example.test>",
        "TO:<bob.@example.test>",
        "TO:<bob@example.test@other.test>",
        "TO:<other.test!bob>",
        "TO:<bob example@example.test>",
        "TO:<bob@example.test> =x",
        "TO:<@route.test:>",
        "TO:<@route.test bob@example.test>",
        "TO <bob@example.test>",
        "FROM:<bob@example.test>",
    ],
)
def test_malformed_paths_are_refused(argument: str) -> None:
    with pytest.raises(PathSyntaxError):
        parse_path(argument, "TO")


def test_parameters_are_keywords_with_optional_values() -> None:
    path = parse_path("TO:<bob@example.test> NOTIFY ORCPT=rfc822;bob@example.test", "TO")
    assert path.params == {"NOTIFY": None, "ORCPT": "rfc822;bob@example.test"}
    assert path.options == ["NOTIFY", "ORCPT=rfc822;bob@example.test"]


def test_split_unquotes_and_normalizes_the_domain() -> None:
    address = split('"Bob Smith"@Example.TEST.')
    assert (address.local, address.domain, address.quoted) == ("Bob Smith", "example.test", True)
    assert split("@relay.test:bob@example.test").domain == "example.test"
    assert split("postmaster").domain == ""


@pytest.mark.parametrize(
    ("given", "canonical"), [("Bob@Example.Test", "bob@example.test"), (" bob@example.test. ", "bob@example.test")]
)
def test_mailbox_names_are_canonical(given: str, canonical: str) -> None:
    assert normalize_mailbox(given) == canonical


@pytest.mark.parametrize(
    "given", ["bob", "bob%x@example.test", "bob!x@example.test", '"bob"@example.test', "@example.test", "bob@x_y.test"]
)
def test_a_mailbox_name_must_be_plain(given: str) -> None:
    with pytest.raises(AddressError):
        normalize_mailbox(given)


@pytest.mark.parametrize(
    "given", ["alice@example.test", "ALICE@Example.TEST", " alice@example.test", "\talice@example.test "]
)
def test_a_login_name_is_accepted_up_to_case_and_spaces_around_it(given: str) -> None:
    assert login_name(given) == LoginName("alice@example.test", None)


@pytest.mark.parametrize(
    ("given", "mailbox", "problem"),
    [
        ("alice@example.test.", "alice@example.test", "it ends with a dot"),
        (" Alice@Example.Test.. ", "alice@example.test", "it ends with a dot"),
        ("\u00a0alice@example.test", "alice@example.test", "blank characters other than spaces surround it"),
        ("alice", None, "it is not of the form local@domain"),
        ('"alice"@example.test', None, "it is not of the form local@domain"),
        (b"\xffalice@example.test".decode("utf-8", "surrogateescape"), None, "it is not valid UTF-8"),
    ],
)
def test_other_spellings_of_a_login_name_are_refused_but_keep_the_mailbox_they_name(
    given: str, mailbox: str | None, problem: str
) -> None:
    """The mailbox keys the failure count and the lock, so a refused spelling counts with the others."""
    assert login_name(given) == LoginName(mailbox, problem)
