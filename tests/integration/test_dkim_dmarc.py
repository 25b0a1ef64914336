"""DKIM and DMARC against a real authoritative DNS server (NSD) serving keys and policies.

A DKIM-signed mail from a domain with p=reject passes and says so in the events; a signature
broken in transit fails; a forged From of a p=reject domain fails DMARC.
"""

from __future__ import annotations

import base64
import smtplib
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support.dns import running_dns
from tests.support.mailwarden import Mailwarden, running

pytestmark = pytest.mark.integration

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PRIVATE_PEM = KEY.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
)
PUBLIC = base64.b64encode(
    KEY.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
).decode()


def zone() -> str:
    record = f"v=DKIM1; k=rsa; p={PUBLIC}"
    strings = " ".join(f'"{record[i : i + 200]}"' for i in range(0, len(record), 200))
    return f"""\
$ORIGIN auth.test.
$TTL 300
@        IN SOA ns1.auth.test. hostmaster.auth.test. 1 3600 600 86400 60
@        IN NS  ns1.auth.test.
ns1      IN A   127.0.0.1
sel._domainkey.signed  IN TXT ( {strings} )
_dmarc.signed          IN TXT "v=DMARC1; p=reject; adkim=r"
_dmarc.forged          IN TXT "v=DMARC1; p=reject"
signed                 IN TXT "v=spf1 -all"
forged                 IN TXT "v=spf1 -all"
"""


def signed(mail: EmailMessage) -> bytes:
    raw = mail.as_bytes().replace(b"\n", b"\r\n")
    signature = dkim.sign(
        raw, b"sel", b"signed.auth.test", PRIVATE_PEM, include_headers=[b"from", b"to", b"subject", b"message-id"]
    )
    return bytes(signature) + raw


def mail(sender: str, subject: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = "bob@example.test"
    message["Subject"] = subject
    message["Message-ID"] = f"<{subject.replace(' ', '-')}@auth.test>"
    message.set_content("Quarterly figures attached in the next mail.\n")
    return message


def send(gateway: Mailwarden, sender: str, raw: bytes) -> tuple[int, str]:
    with smtplib.SMTP("127.0.0.1", gateway.smtp_port, timeout=60) as client:
        client.ehlo("client.auth.test")
        client.mail(sender)
        assert client.rcpt("bob@example.test")[0] == 250
        code, text = client.data(raw)
    return code, " ".join(text.decode().split())


def content_detail(gateway: Mailwarden) -> dict[str, Any]:
    data = [e for e in gateway.events() if e["kind"] == "data"][-1]
    (entry,) = [c for c in data["detail"]["checks"] if c["check"] == "content"]
    detail: dict[str, Any] = entry["detail"]
    return detail


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mailwarden]:
    root = tmp_path_factory.mktemp("auth")
    with (
        running_dns(root / "dns", zones={"auth.test": zone()}, lists={}) as servers,
        running(
            root / "mw",
            {
                "dns": {"nameservers": [servers.nsd]},
                "checks": {"order": ["recipients", "size", "spf", "content"]},
                "spf": {"fail": "tag"},  # let DMARC decide, to show its refusal
            },
        ) as instance,
    ):
        yield instance


def test_valid_dkim_signature_aligned_with_from_passes_dmarc_and_says_so_in_the_header(gateway: Mailwarden) -> None:
    code, text = send(gateway, "alice@signed.auth.test", signed(mail("Alice <alice@signed.auth.test>", "figures")))
    assert code == 250, text
    detail = content_detail(gateway)
    assert detail["dkim"] == [{"result": "pass", "domain": "signed.auth.test", "selector": "sel", "reason": ""}]
    assert detail["dmarc"]["result"] == "pass"
    assert detail["dmarc"]["reason"] == "aligned dkim signed.auth.test"
    (stored,) = gateway.messages("bob@example.test")
    head = " ".join(stored.split(b"\r\n\r\n", 1)[0].decode().split())
    assert "Authentication-Results: mx.example.test; spf=fail" in head
    assert "dkim=pass header.d=signed.auth.test header.s=sel" in head
    assert "dmarc=pass (p=reject; aligned dkim signed.auth.test) header.from=signed.auth.test" in head


def test_signature_broken_in_transit_fails_dkim(gateway: Mailwarden) -> None:
    raw = signed(mail("alice@signed.auth.test", "tampered")).replace(b"Quarterly", b"Quarter1y")
    code, text = send(gateway, "alice@signed.auth.test", raw)
    detail = content_detail(gateway)
    assert detail["dkim"][0]["result"] == "fail"
    assert detail["dmarc"]["result"] == "fail"
    assert code == 550, text  # p=reject, SPF fails too: nothing vouches for the From domain


def test_forged_from_of_a_reject_domain_is_refused_with_550_msg_dmarc_reject(gateway: Mailwarden) -> None:
    code, text = send(gateway, "ceo@forged.auth.test", mail("CEO <ceo@forged.auth.test>", "wire transfer").as_bytes())
    assert code == 550, text
    assert text.startswith("5.7.1 DMARC policy of forged.auth.test is reject and the message failed DMARC")
    assert "SPF fail for forged.auth.test; DKIM none" in text
    reject = [e for e in gateway.events() if e["kind"] == "reject"][-1]
    assert reject["reason"] == "msg.dmarc_reject"
    assert reject["detail"]["dmarc"]["applied"] is True


def test_missing_key_is_a_permanent_dkim_error(gateway: Mailwarden) -> None:
    raw = signed(mail("alice@signed.auth.test", "other selector")).replace(b"s=sel;", b"s=gone;")
    send(gateway, "alice@signed.auth.test", raw)
    detail = content_detail(gateway)
    assert detail["dkim"][0]["result"] == "permerror"
    assert detail["dkim"][0]["reason"] == "no key published"
