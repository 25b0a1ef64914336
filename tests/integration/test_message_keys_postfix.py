"""A real Postfix with a content filter: each message re-injected under a new queue id is one
message with two hops, and two messages with the same Message-ID stay two (issue 12, item 1).

The private Postfix (tests/support/postfix.py) hands every message to its content filter - here a
second smtpd of its own on another port, as amavis would re-inject - which queues it again;
XFORWARD on or off decides whether the new queue file's `client=` line names the original
(`orig_queue_id=`), or only the original's delivery line says `queued as`.
"""

from __future__ import annotations

import json
import subprocess
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from tests.support.mailwarden import Mailwarden
from tests.support.net import free_port
from tests.support.postfix import POSTFIX, running_postfix

pytestmark = pytest.mark.integration


def filtered_log(xforward: bool) -> str:
    reinject = free_port()
    settings = {"content_filter": f"smtp:[127.0.0.1]:{reinject}"}
    if xforward:
        settings |= {"smtp_send_xforward_command": "yes", "smtpd_authorized_xforward_hosts": "127.0.0.0/8"}
    with running_postfix(local_domains=["dest.test"], settings=settings) as postfix:
        postfix.postconf(
            "-M",
            f"127.0.0.1:{reinject}/inet = 127.0.0.1:{reinject} inet n - n - - smtpd -o content_filter="
            " -o receive_override_options=no_unknown_recipient_checks,no_header_body_checks",
        )
        subprocess.run([POSTFIX, "-c", str(postfix.etc), "reload"], capture_output=True, check=True, timeout=60)
        for number in (1, 2):
            mail = EmailMessage()
            mail["From"], mail["To"], mail["Subject"] = "alice@sender.test", "bob@dest.test", f"copy {number}"
            mail["Message-ID"] = "<same@sender.test>"
            mail.set_content("Hello Bob\n")
            postfix.wait_log(r"reload -- version")
            postfix.submit("alice@sender.test", ["bob@dest.test"], mail)
        postfix.wait_delivered(2)
        postfix.wait_log(r"(?s)(relay=virtual.*){2}")
        return postfix.log_text()


@pytest.mark.parametrize("xforward", [True, False], ids=["orig_queue_id", "queued_as_only"])
def test_real_postfix_content_filter_gives_one_message_with_two_hops_per_copy(tmp_path: Path, xforward: bool) -> None:
    log = tmp_path / "maillog"
    log.write_text(filtered_log(xforward))
    assert ("orig_queue_id=" in log.read_text()) is xforward
    instance = Mailwarden(tmp_path / "mw", {"ingest": {"timezone": ""}})
    instance.cli("ingest", "--node", "mta", str(log))
    messages: list[dict[str, Any]] = json.loads(
        instance.cli("trace", "--since", "1d", "--message-id", "<same@sender.test>", "--format", "json").stdout
    )
    assert len(messages) == 2  # the same Message-ID, two messages
    assert len({m["key"] for m in messages}) == 2
    for message in messages:
        deliveries = [e for e in message["events"] if e["kind"] == "deliver"]
        assert [e["detail"]["relay"].startswith("127.0.0.1[") for e in deliveries] == [
            True,
            False,
        ]  # filter, then Maildir
        first, second = (e["queue_id"] for e in deliveries)
        assert first != second and deliveries[0]["detail"]["next_queue_id"] == second
        assert message["queue_id"] == first and message["sender"] == "alice@sender.test"
        (bob,) = message["recipients"]
        assert (bob["address"], bob["status"]) == ("bob@dest.test", "delivered")
        (again,) = json.loads(instance.cli("trace", "--since", "1d", "--queue-id", second, "--format", "json").stdout)
        assert again["key"] == message["key"]  # found by either hop's queue id: the same message
