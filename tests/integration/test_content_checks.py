"""Content checks before the final reply, against real clamd, rspamd and spamd and a real `mailwarden serve`.

Viruses, macro documents, dangerous files and spam are refused while the sender is connected,
with the finding named in the reply; a borderline mail lands in Junk with X-Spam-* headers; a
clean one in INBOX. The Office fixtures are built by tests/support/office.py.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import smtplib
import zipfile
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from mailwarden.scan.clamd import ClamdClient
from mailwarden.spool import Spool
from tests.support import office
from tests.support.mailwarden import Mailwarden, running
from tests.support.postfix import running_postfix
from tests.support.scanners import CLAM_TESTFILES, EICAR, GTUBE, Clamd, Rspamd, Spamd

pytestmark = pytest.mark.integration

PE_PROGRAM = b"MZ" + b"\0" * 58 + (64).to_bytes(4, "little") + b"PE\0\0" + b"\0" * 200


def message(subject: str, body: str = "Hello Bob,\nsee the attachment.\n", **files: bytes) -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = "Alice <alice@sender.test>"
    mail["To"] = "bob@example.test"
    mail["Subject"] = subject
    mail["Message-ID"] = f"<{abs(hash(subject))}@sender.test>"
    mail["Date"] = "Sat, 28 Nov 2026 09:00:00 +0000"
    mail.set_content(body)
    for name, data in files.items():
        mail.add_attachment(data, maintype="application", subtype="octet-stream", filename=name.replace("_", "."))
    return mail


def zipped(name: str, data: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, data)
    return buffer.getvalue()


def send(gateway: Mailwarden, mail: EmailMessage | bytes, rcpt: str = "bob@example.test") -> tuple[int, str]:
    """The reply to DATA (or the first refusal before it)."""
    raw = mail.as_bytes() if isinstance(mail, EmailMessage) else mail
    with smtplib.SMTP("127.0.0.1", gateway.smtp_port, timeout=120) as client:
        client.ehlo("client.sender.test")
        client.mail("alice@sender.test")
        code, text = client.rcpt(rcpt)
        if code != 250:
            return code, text.decode()
        code, text = client.data(raw)
    return code, " ".join(text.decode().split())


def last(gateway: Mailwarden, kind: str) -> dict[str, Any]:
    return [e for e in gateway.events() if e["kind"] == kind][-1]


def content_detail(gateway: Mailwarden) -> dict[str, Any]:
    (entry,) = [c for c in last(gateway, "data")["detail"]["checks"] if c["check"] == "content"]
    detail: dict[str, Any] = entry.get("detail", {})
    return detail


@pytest.fixture(scope="module")
def clamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clamd]:
    daemon = Clamd(tmp_path_factory.mktemp("clamd"), stream_max="40M").start()
    try:
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture(scope="module")
def rspamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rspamd]:
    daemon = Rspamd(tmp_path_factory.mktemp("rspamd")).start()
    try:
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, clamd: Clamd, rspamd: Rspamd) -> Iterator[Mailwarden]:
    """clamd over its unix socket, rspamd over TCP; tag at 0.5 so an ordinary newsletter is borderline."""
    overrides = {
        "smtp": {"max_message_size": 41_943_040},
        "scan": {"budget": 60.0},
        "scan.clamd": {"address": str(clamd.socket), "max_stream": 41_943_040},
        "scan.spam": {"engine": "rspamd", "address": rspamd.address, "tag_score": 4.0, "reject_score": 15.0},
    }
    with running(tmp_path_factory.mktemp("mw"), overrides) as instance:
        yield instance


# ---------------------------------------------------------------------------- viruses
def test_eicar_attachment_is_refused_with_554_naming_the_virus_and_the_file(gateway: Mailwarden) -> None:
    code, text = send(gateway, message("invoice", invoice_com=EICAR))
    assert code == 554
    assert text.startswith("5.7.1 Virus Eicar-Test-Signature")
    assert "in the attachment invoice.com" in text
    reject = last(gateway, "reject")
    assert reject["reason"] == "msg.virus"
    assert reject["detail"]["clamd"]["virus"].startswith("Eicar-Test-Signature")
    assert text.endswith(f"ref={reject['ref']}")
    assert not any(b"EICAR" in stored for stored in gateway.messages("bob@example.test"))


def test_zipped_eicar_is_refused_naming_the_archive(gateway: Mailwarden) -> None:
    code, text = send(gateway, message("zipped invoice", invoice_zip=zipped("invoice.com", EICAR)))
    assert code == 554
    assert "Eicar-Test-Signature" in text
    assert "in the attachment invoice.zip" in text


def test_the_md5_signature_of_clam_exe_catches_every_clamav_testfile(clamd: Clamd) -> None:
    async def scan_all() -> dict[str, str | None]:
        client = ClamdClient(str(clamd.socket), timeout=60, max_stream=1 << 30)
        found = {}
        for path in sorted(CLAM_TESTFILES.iterdir()):
            holder = Spool(clamd.root, 1 << 30, 1 << 30)
            holder.write(path.read_bytes())
            found[path.name] = (await client.scan(holder)).virus
        client.close()
        return found

    found = asyncio.run(scan_all())
    assert len(found) == 44
    assert {name for name, virus in found.items() if not (virus or "").startswith("ClamAV-Test-File")} == set()


def test_clam_exe_from_clamav_testfiles_in_a_packed_variant_is_refused(gateway: Mailwarden) -> None:
    packed = (CLAM_TESTFILES / "clam.7z").read_bytes()
    code, text = send(gateway, message("packed", tools_7z=packed))
    assert code == 554
    assert "ClamAV-Test-File" in text


# ---------------------------------------------------------------------------- macros and dangerous files
@pytest.mark.parametrize(
    ("name", "build", "finding"),
    [
        ("Rechnung.doc", office.word_doc, "AutoOpen"),
        ("Rechnung.docm", office.word_docm, "AutoOpen"),
        ("Tabelle.xlsm", office.excel_xlm, "Excel 4 macro sheet"),
        ("Tabelle-verschluesselt.xlsm", office.encrypted_xlsm, "AutoOpen"),
    ],
)
def test_office_document_with_auto_running_macro_is_refused_as_msg_macro(
    gateway: Mailwarden, name: str, build: Any, finding: str
) -> None:
    mail = message(f"document {name}")
    mail.add_attachment(build(), maintype="application", subtype="octet-stream", filename=name)
    code, text = send(gateway, mail)
    assert code == 554, text
    assert text.startswith(f"5.7.1 The attachment {name} contains an Office macro that runs automatically")
    assert finding in text
    reject = last(gateway, "reject")
    assert reject["reason"] == "msg.macro"
    (macro,) = reject["detail"]["content"]["macros"]
    assert macro["suspicious"] is True


def test_macro_document_inside_a_zip_is_refused(gateway: Mailwarden) -> None:
    code, text = send(gateway, message("zipped doc", docs_zip=zipped("Rechnung.docm", office.word_docm())))
    assert code == 554
    assert "docs.zip/Rechnung.docm" in text


def test_exe_inside_a_zip_is_refused_as_dangerous_attachment(gateway: Mailwarden) -> None:
    code, text = send(gateway, message("setup", tools_zip=zipped("setup.exe", PE_PROGRAM)))
    assert code == 554
    assert text.startswith("5.7.1 The attachment tools.zip/setup.exe is a Windows program (.exe)")
    assert last(gateway, "reject")["reason"] == "msg.dangerous_attachment"


def test_program_disguised_as_pdf_is_refused_by_its_content(gateway: Mailwarden) -> None:
    code, text = send(gateway, message("scan", scan_pdf=PE_PROGRAM))
    assert code == 554
    assert "scan.pdf is a Windows program (PE executable)" in text


# ---------------------------------------------------------------------------- spam
def test_gtube_is_refused_by_rspamd_with_550_and_the_score(gateway: Mailwarden) -> None:
    code, text = send(gateway, message("cheap pills", body=f"Buy now\n{GTUBE}\n"))
    assert code == 550
    assert re.match(r"5\.7\.1 The message was classified as spam \(score 15, limit 15; GTUBE", text)
    reject = last(gateway, "reject")
    assert reject["reason"] == "msg.spam"
    assert reject["detail"]["spam"]["engine"] == "rspamd"
    assert "GTUBE" in reject["detail"]["spam"]["symbols"]


def test_borderline_mail_is_delivered_into_junk_with_spam_headers(gateway: Mailwarden) -> None:
    mail = EmailMessage()  # no Date, no Message-ID, an all-caps subject: a few points, below 15
    mail["From"] = "alice@sender.test"
    mail["To"] = "bob@example.test"
    mail["Subject"] = "FREE OFFER!!! ACT NOW"
    mail.set_content("<html><body>CLICK HERE</body></html>", subtype="html")
    code, text = send(gateway, mail)
    assert code == 250, text
    (stored,) = gateway.messages("bob@example.test", "Junk")
    head = stored.split(b"\r\n\r\n", 1)[0].decode()
    assert "X-Spam-Flag: YES" in head
    score = float(re.search(r"X-Spam-Score: ([\d.]+)", head).group(1))  # type: ignore[union-attr]
    assert 4.0 <= score < 15.0
    assert "engine=rspamd" in head
    deliver = last(gateway, "deliver")
    assert deliver["reason"] == "delivered.junk"
    assert deliver["detail"]["folder"] == "Junk"
    explained = json.loads(gateway.cli("explain", deliver["ref"], "--format", "json").stdout)
    assert explained["reason"] == "delivered.junk"
    assert f"looked like spam (score {score:g})" in explained["summary"]


def test_clean_mail_with_attachment_is_delivered_into_inbox_with_scan_headers(gateway: Mailwarden) -> None:
    before = len(gateway.messages("bob@example.test"))
    code, text = send(gateway, message("minutes", minutes_docx=office.clean_docx()))
    assert code == 250, text
    stored = gateway.messages("bob@example.test")[before:]
    assert len(stored) == 1
    head = stored[0].split(b"\r\n\r\n", 1)[0].decode()
    assert "X-Virus-Scanned: clamd at mx.example.test: clean" in head
    assert "X-Spam-Flag: NO" in head
    detail = content_detail(gateway)
    assert detail["content"]["attachments"] == ["minutes.docx"]
    assert detail["spam"]["engine"] == "rspamd"


# ---------------------------------------------------------------------------- a real sending MTA
def test_postfix_bounce_for_the_virus_mail_carries_our_reply_and_ref(gateway: Mailwarden) -> None:
    with running_postfix(relayhost=f"127.0.0.1:{gateway.smtp_port}", local_domains=["sender.test"]) as postfix:
        postfix.submit("alice@sender.test", ["bob@example.test"], message("via postfix", Rechnung_com=EICAR))
        (bounce,) = postfix.wait_delivered(1, timeout=120)
    reject = last(gateway, "reject")
    assert reject["reason"] == "msg.virus"
    text = " ".join(bounce.as_string().split())
    assert "554 5.7.1 Virus Eicar-Test-Signature" in text
    assert "in the attachment Rechnung.com" in text
    assert f"ref={reject['ref']}" in text


# ---------------------------------------------------------------------------- SpamAssassin
def test_gtube_is_refused_by_spamassassin_and_a_stopped_spamd_defers(tmp_path: Path, clamd: Clamd) -> None:
    spamd = Spamd(tmp_path / "spamd").start()
    try:
        overrides = {"scan.spam": {"engine": "spamassassin", "address": spamd.address, "timeout": 60.0}}
        with running(tmp_path / "mw", overrides) as gateway:
            code, text = send(gateway, message("gtube", body=f"{GTUBE}\n"))
            assert code == 550
            assert re.match(r"5\.7\.1 The message was classified as spam \(score 10\d\d", text)
            assert "GTUBE" in text
            code, text = send(gateway, message("hello", body="Hi Bob, lunch at noon?\n"))
            assert code == 250, text
            spamd.stop()
            code, text = send(gateway, message("hello again", body="Are you there?\n"))
            assert code == 451, text
            assert text.startswith("4.3.0 The spamassassin scanner is temporarily unavailable")
            assert len(gateway.messages("bob@example.test")) == 1  # only the one accepted before
            tempfail = last(gateway, "tempfail")
            assert tempfail["reason"] == "infra.scanner_unavailable"
            assert "spamassassin" in tempfail["detail"]["errors"]
    finally:
        spamd.stop()


# ---------------------------------------------------------------------------- per-recipient policy
def test_recipient_with_a_different_spam_policy_is_deferred_at_rcpt(gateway: Mailwarden) -> None:
    gateway.add_user("carol@example.test")
    gateway.cli("users", "set", "carol@example.test", "spam_reject=off")
    with smtplib.SMTP("127.0.0.1", gateway.smtp_port, timeout=60) as client:
        client.ehlo("client.sender.test")
        client.mail("alice@sender.test")
        assert client.rcpt("bob@example.test")[0] == 250
        code, text = client.rcpt("carol@example.test")
        assert code == 452
        assert text.decode().startswith("4.5.3 Recipient carol@example.test has a different filter policy")
        code, _ = client.data(message("gtube for both", body=f"{GTUBE}\n").as_bytes())
        assert code == 550  # the verdict is bob's; carol's copy comes in its own transaction
    code, text = send(gateway, message("gtube for carol", body=f"{GTUBE}\n"), rcpt="carol@example.test")
    assert code == 250, text
    (stored,) = gateway.messages("carol@example.test", "Junk")
    assert b"X-Spam-Flag: YES" in stored


# ---------------------------------------------------------------------------- bad input
def _raw(headers: str, body: bytes) -> bytes:
    return (
        "From: alice@sender.test\r\nTo: bob@example.test\r\nMessage-ID: <bad@sender.test>\r\n" + headers + "\r\n\r\n"
    ).encode() + body


def test_malformed_mime_is_judged_not_crashed_on(gateway: Mailwarden) -> None:
    broken = _raw(
        'Subject: broken\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="never-seen\r\n',
        b"--other\r\nContent-Type: application/octet-stream; name*0*=bogus'xx'%ZZ\r\n\r\n\x00\xff\xfe\r\n--other",
    )
    code, text = send(gateway, broken)
    assert code == 250, text
    assert "content" in content_detail(gateway)


def test_broken_base64_is_decoded_as_far_as_possible(gateway: Mailwarden) -> None:
    import base64

    encoded = base64.b64encode(PE_PROGRAM).decode()
    encoded = encoded.rstrip("=") + "QQQQQ"  # no padding, and a stray quantum of one character
    garbled = "\r\n".join(encoded[i : i + 60] + "*!" for i in range(0, len(encoded), 60))
    body = (
        "--b1\r\nContent-Type: text/plain\r\n\r\nsee attachment\r\n"
        "--b1\r\nContent-Type: application/pdf; name=report.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        f"{garbled}\r\n--b1--\r\n"
    ).encode()
    code, text = send(
        gateway, _raw("Subject: b64\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b1", body)
    )
    assert code == 554, text
    assert "report.pdf is a Windows program (PE executable)" in text
    assert any("base64" in p for p in last(gateway, "reject")["detail"]["content"]["problems"])


def test_thousands_of_nested_multiparts_are_refused_as_too_complex(gateway: Mailwarden) -> None:
    depth = 5000
    opening = "".join(f"--n{i}\r\nContent-Type: multipart/mixed; boundary=n{i + 1}\r\n\r\n" for i in range(depth))
    closing = "".join(f"--n{i}--\r\n" for i in reversed(range(depth)))
    body = (opening + "--n5000\r\nContent-Type: text/plain\r\n\r\ndeep\r\n" + closing).encode()
    code, text = send(
        gateway, _raw("Subject: deep\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=n0", body)
    )
    assert code == 554, text
    assert text.startswith("5.6.0 The message structure cannot be checked: MIME parts nested deeper than 20 levels")
    assert last(gateway, "reject")["reason"] == "msg.too_complex"


def test_twenty_megabyte_attachment_gets_a_verdict_in_bounded_memory(gateway: Mailwarden) -> None:
    import random

    blob = random.Random(20).randbytes(20 * 1024 * 1024)
    code, text = send(gateway, message("big", data_bin=blob))
    assert code == 250, text
    assert gateway.process is not None
    status = Path(f"/proc/{gateway.process.pid}/status").read_text()
    peak_kb = int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1))  # type: ignore[union-attr]
    assert peak_kb < 250 * 1024, f"the gateway grew to {peak_kb} kB for a 27 MB message"


def test_zip_bomb_is_refused_as_dangerous_without_unpacking_it(gateway: Mailwarden) -> None:
    buffer = io.BytesIO()
    chunk = b"\0" * (1024 * 1024)
    with (
        zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive,
        archive.open("zeros.bin", "w", force_zip64=True) as member,
    ):
        for _ in range(1024):  # 1 GiB of zeros, about 1 MB compressed
            member.write(chunk)
    code, text = send(gateway, message("bomb", backup_zip=buffer.getvalue()))
    assert code == 554, text
    assert "backup.zip/zeros.bin is a compression bomb" in text


def test_a_mailbox_that_tags_macros_gets_the_document_in_junk_with_a_warning(gateway: Mailwarden) -> None:
    gateway.add_user("dave@example.test")
    gateway.cli("users", "set", "dave@example.test", "macros=tag")
    mail = message("macro for dave")
    mail.add_attachment(office.word_docm(), maintype="application", subtype="octet-stream", filename="Plan.docm")
    code, text = send(gateway, mail, rcpt="dave@example.test")
    assert code == 250, text
    (stored,) = gateway.messages("dave@example.test", "Junk")
    head = " ".join(stored.split(b"\r\n\r\n", 1)[0].decode().split())
    assert "X-Mailwarden-Warning: macro in Plan.docm: AutoOpen, Workbook_Open runs automatically" in head
