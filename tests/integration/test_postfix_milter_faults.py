"""When the milter is not there or the conversation breaks, Postfix's `milter_default_action = tempfail` applies.

The sending client then gets a 4xx from Postfix and keeps its message for a retry: nothing is
accepted unchecked, nothing is lost. Between a real Postfix and `mailwarden serve` a small relay
can corrupt the conversation (an unknown command instead of a body chunk): we close the
connection cleanly, record why, and Postfix answers its client 451.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.mailwarden import running
from tests.support.net import free_port
from tests.support.postfix import running_postfix
from tests.support.smtp import events_of, send

pytestmark = pytest.mark.integration


def milter_settings(port: int) -> dict[str, str]:
    return {
        "smtpd_milters": f"inet:127.0.0.1:{port}",
        "milter_default_action": "tempfail",
        "milter_protocol": "6",
        "milter_connect_timeout": "5s",
    }


def test_with_mailwarden_stopped_postfix_answers_451_and_the_retry_is_delivered(tmp_path: Path) -> None:
    milter_port = free_port()
    with (
        running(tmp_path / "mw", {"milter": {"listen": [f"127.0.0.1:{milter_port}"]}}) as milter,
        running_postfix(local_domains=["example.test"], settings=milter_settings(milter_port)) as postfix,
    ):
        milter.stop()
        attempt = send(milter, "127.0.0.1", "client.sender.test", "alice@good.test", port=postfix.smtp_port)
        assert attempt.last.code == 451, attempt.replies
        assert attempt.last.text.startswith("4.7.1"), attempt.replies
        assert postfix.queue_empty() and postfix.delivered() == []  # Postfix took nothing: the client still has it
        milter.start()
        retry = send(milter, "127.0.0.1", "client.sender.test", "alice@good.test", port=postfix.smtp_port)
        assert retry.accepted, retry.replies
        (delivered,) = postfix.wait_delivered(1)
        assert delivered["X-Mailwarden-Ref"]


@contextmanager
def corrupting_relay(upstream: int) -> Iterator[int]:
    """A relay from Postfix to the milter that sends an unknown command in place of the first body chunk."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def pump(source: socket.socket, target: socket.socket, corrupt: bool) -> None:
        buffer = b""
        try:
            while chunk := source.recv(65536):
                if not corrupt:
                    target.sendall(chunk)
                    continue
                buffer += chunk
                while len(buffer) >= 5 and len(buffer) >= 4 + struct.unpack("!I", buffer[:4])[0]:
                    size = 4 + struct.unpack("!I", buffer[:4])[0]
                    packet, buffer = buffer[:size], buffer[size:]
                    if packet[4:5] == b"B":
                        packet = struct.pack("!I", 2) + b"Z\0"
                    target.sendall(packet)
        except OSError:
            pass
        finally:  # shut down, not just close: the other direction's thread still holds the socket
            for end in (source, target):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def accept() -> None:
        while True:
            try:
                postfix_side, _ = listener.accept()
            except OSError:
                return
            milter_side = socket.create_connection(("127.0.0.1", upstream))
            threading.Thread(target=pump, args=(postfix_side, milter_side, True), daemon=True).start()
            threading.Thread(target=pump, args=(milter_side, postfix_side, False), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield port
    finally:
        listener.close()


def test_a_broken_milter_conversation_ends_cleanly_and_postfix_tempfails_the_message(tmp_path: Path) -> None:
    milter_port = free_port()
    with (
        running(tmp_path / "mw", {"milter": {"listen": [f"127.0.0.1:{milter_port}"]}}) as milter,
        corrupting_relay(milter_port) as relay_port,
        running_postfix(local_domains=["example.test"], settings=milter_settings(relay_port)) as postfix,
    ):
        attempt = send(milter, "127.0.0.1", "client.sender.test", "alice@good.test", port=postfix.smtp_port)
        assert (attempt.last.stage, attempt.last.code) == ("data", 451), attempt.replies
        assert postfix.queue_empty() and postfix.delivered() == []
        ref = next(e["ref"] for e in milter.events() if e["kind"] == "mail")
        (disconnect,) = [e for e in events_of(milter, ref, "disconnect") if e["kind"] == "disconnect"]
        assert disconnect["detail"]["problem"] == "protocol error: unknown command 'Z'"
        assert disconnect["detail"]["lost"] is True
        assert "Traceback" not in (milter.root / "serve.log").read_text()
