"""Never an open relay, down to its last line: with `recipients` left out of `[checks] order` no check
vouches for any recipient, and the gateway refuses every one as relaying - its own mailboxes too.

(An order without `recipients` is a configuration mistake; the point is what it costs: mail refused,
never mail relayed or delivered unchecked.)
"""

from __future__ import annotations

import re
import smtplib
from pathlib import Path

import pytest

from tests.support.mailwarden import running

pytestmark = pytest.mark.integration

LOCAL = "bob@example.test"  # a mailbox of ours
FOREIGN = "someone@elsewhere.test"


def test_without_the_recipients_check_local_and_foreign_recipients_are_refused_as_relaying(tmp_path: Path) -> None:
    with running(tmp_path / "mw", {"checks": {"order": ["size"]}}, users=(LOCAL,)) as gateway:
        with smtplib.SMTP("127.0.0.1", gateway.smtp_port, timeout=60) as client:
            client.ehlo("client.sender.test")
            assert client.mail("alice@sender.test")[0] == 250
            replies = {address: client.rcpt(address) for address in (LOCAL, FOREIGN)}
            data = client.docmd("DATA")
        events = gateway.events()

    for address, (code, raw) in replies.items():
        text = raw.decode()
        assert code == 554, (address, text)
        assert text.startswith(f"5.7.1 Relay access denied for {address}: no check accepted this recipient;"), text
        found = re.search(r"ref=([0-9A-Z]{12})", text)
        assert found is not None, text
        (refusal,) = [e for e in events if e["kind"] == "reject" and e["recipient"] == address]
        assert (refusal["reason"], refusal["smtp_code"], refusal["ref"]) == ("rcpt.relay_denied", 554, found.group(1))
    assert data[0] == 554  # no valid recipients: there is no DATA to send
    assert [e for e in events if e["kind"] in ("rcpt", "accept", "deliver")] == []
    assert gateway.messages(LOCAL) == []
