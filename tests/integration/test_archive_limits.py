"""Archives the inspection cannot look into completely do not pass as clean (issue 11, item 3).

The ZIPs of the attack, sent to a real `mailwarden serve`: 17 members of zeros just under the bomb
threshold and then inner.zip with evil.exe; the same with archives instead of the zeros (an
archive inside is unpacked whole, zeros only as far as their magic bytes), so the decompression
budget really runs out before inner.zip; evil.exe as the 1,001st member; archives
nested deeper than `archive_depth`. By default each is refused with 554 5.6.0 msg.uninspectable
(or, where the names alone give it away, as a dangerous attachment) and the reject event records
what was left uninspected and why; with `incomplete_archives = "tag"` the message is accepted
with a warning header.
"""

from __future__ import annotations

from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any

import pytest

from tests.support import archives
from tests.support.mailwarden import Mailwarden, running
from tests.support.smtp import Attempt, events_of, send, stored_message

pytestmark = pytest.mark.integration


def mail_with(name: str, data: bytes) -> bytes:
    mail = EmailMessage()
    mail["From"] = "Alice <alice@sender.test>"
    mail["To"] = "bob@example.test"
    mail["Subject"] = f"the files in {name}"
    mail.set_content("Hello Bob,\nthe files are attached.\n")
    mail.add_attachment(data, maintype="application", subtype="zip", filename=name)
    return mail.as_bytes()


def deliver(gateway: Mailwarden, message: bytes) -> Attempt:
    return send(gateway, "127.0.0.1", "client.sender.test", "alice@sender.test", message=message)


def content_of(event: dict[str, Any]) -> dict[str, Any]:
    content: dict[str, Any] = event["detail"]["content"]
    return content


def refusal(gateway: Mailwarden, attempt: Attempt) -> dict[str, Any]:
    assert attempt.last.ref is not None, attempt.replies
    (reject,) = [e for e in events_of(gateway, attempt.last.ref, "reject") if e["kind"] == "reject"]
    return reject


ARCHIVES_THEN_INNER_ZIP = archives.zip_of(
    [
        *((f"backup{n:02}.zip", archives.stored_zeros(archives.JUST_UNDER_BOMB)) for n in range(17)),
        ("inner.zip", archives.stored_zeros(archives.JUST_UNDER_BOMB, ("evil.exe", archives.PE_PROGRAM))),
    ]
)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mailwarden]:
    """No virus or spam scanner: the attachment inspection alone decides."""
    with running(tmp_path_factory.mktemp("mw")) as instance:
        yield instance


@pytest.fixture(scope="module")
def tagging_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mailwarden]:
    with running(tmp_path_factory.mktemp("mw-tag"), {"scan.content": {"incomplete_archives": "tag"}}) as instance:
        yield instance


def test_zeros_before_inner_zip_no_longer_hide_evil_exe(gateway: Mailwarden) -> None:
    """The attack as found: 17 x 16 MiB of zeros (270 MB from about 300 KB), then inner.zip/evil.exe."""
    archive = archives.zeros_then(17, archives.JUST_UNDER_BOMB, [("inner.zip", archives.zip_of([("evil.exe", b"")]))])
    attempt = deliver(gateway, mail_with("big.zip", archive))
    assert (attempt.last.stage, attempt.last.code) == ("data", 554), attempt.replies
    assert attempt.last.sentence.startswith("The attachment big.zip/inner.zip/evil.exe is a Windows program (.exe)")
    reject = refusal(gateway, attempt)
    assert reject["reason"] == "msg.dangerous_attachment"
    assert "uninspected" not in content_of(reject)


def test_an_archive_that_uses_up_the_decompression_budget_is_refused_as_uninspectable(gateway: Mailwarden) -> None:
    attempt = deliver(gateway, mail_with("big.zip", ARCHIVES_THEN_INNER_ZIP))
    assert (attempt.last.stage, attempt.last.code) == ("data", 554), attempt.replies
    assert attempt.last.enhanced == "5.6.0"
    assert attempt.last.sentence.startswith(
        "The file big.zip/backup16.zip could not be checked completely: it does not fit into the 256 MiB we "
        "unpack per message at most; send the files unpacked or in smaller archives."
    )
    reject = refusal(gateway, attempt)
    assert reject["reason"] == "msg.uninspectable"
    assert [(gap["path"], gap["cause"]) for gap in content_of(reject)["uninspected"]] == [
        ("big.zip/backup16.zip", "budget"),
        ("big.zip/inner.zip", "budget"),
    ]
    assert gateway.messages("bob@example.test") == []


def test_evil_exe_as_the_1001st_member_is_refused_and_the_member_limit_recorded(gateway: Mailwarden) -> None:
    attempt = deliver(gateway, mail_with("many.zip", archives.many(1000, [("evil.exe", b"")])))
    assert (attempt.last.stage, attempt.last.code) == ("data", 554), attempt.replies
    assert attempt.last.sentence.startswith("The attachment many.zip/evil.exe is a Windows program (.exe)")
    reject = refusal(gateway, attempt)
    assert reject["reason"] == "msg.dangerous_attachment"
    assert content_of(reject)["uninspected"] == [
        {
            "path": "many.zip",
            "cause": "members",
            "limit": "it holds 1001 files, more than the 1000 we open per archive",
        }
    ]


def test_a_disguised_program_as_the_1001st_member_is_refused_as_uninspectable(gateway: Mailwarden) -> None:
    attempt = deliver(gateway, mail_with("many.zip", archives.many(1000, [("evil.pdf", archives.PE_PROGRAM)])))
    assert (attempt.last.stage, attempt.last.code) == ("data", 554), attempt.replies
    assert attempt.last.sentence.startswith(
        "The file many.zip could not be checked completely: it holds 1001 files, more than the 1000 we open "
        "per archive;"
    )
    assert refusal(gateway, attempt)["reason"] == "msg.uninspectable"


def test_archives_nested_deeper_than_archive_depth_are_refused_as_uninspectable(gateway: Mailwarden) -> None:
    nested = archives.zip_of([("evil.exe", b"")])
    for level in range(3):
        nested = archives.zip_of([(f"level{level}.zip", nested)])
    attempt = deliver(gateway, mail_with("deep.zip", nested))
    assert (attempt.last.stage, attempt.last.code) == ("data", 554), attempt.replies
    assert attempt.last.sentence.startswith(
        "The file deep.zip/level2.zip/level1.zip/level0.zip could not be checked completely: it is an archive "
        "at nesting level 4; we open 3 levels;"
    )
    reject = refusal(gateway, attempt)
    assert reject["reason"] == "msg.uninspectable"
    assert [gap["cause"] for gap in content_of(reject)["uninspected"]] == ["depth"]


def test_with_incomplete_archives_tag_the_message_is_delivered_with_a_warning(tagging_gateway: Mailwarden) -> None:
    attempt = deliver(tagging_gateway, mail_with("big.zip", ARCHIVES_THEN_INNER_ZIP))
    assert attempt.accepted, attempt.replies
    head = stored_message(tagging_gateway, attempt).split(b"\r\n\r\n", 1)[0].decode()
    assert (
        "X-Mailwarden-Warning: not inspected completely: big.zip/backup16.zip (it does not fit into the 256 MiB "
        "we unpack per message at most)" in " ".join(head.split())
    )
    assert attempt.last.ref is not None
    (data,) = [e for e in events_of(tagging_gateway, attempt.last.ref, "accept") if e["kind"] == "data"]
    (content,) = [c for c in data["detail"]["checks"] if c["check"] == "content"]
    assert [gap["cause"] for gap in content["detail"]["content"]["uninspected"]] == ["budget", "budget"]
