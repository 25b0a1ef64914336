"""A minimal SMTP client that sends with CHUNKING (RFC 3030), as Exchange does when a server offers it.

No packaged client speaks BDAT (smtplib, aiosmtplib, swaks, smtp-source do not), so this one does,
over a raw socket: EHLO, then MAIL, the RCPTs and every BDAT chunk pipelined (RFC 2920) in one
stream written from a thread while the replies are read, the last chunk marked LAST. The message
goes as it is: no dot-stuffing, no end marker.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from tests.support.wire import Reply, Wire


@dataclass
class Sent:
    """The replies to one transaction."""

    mail: Reply
    recipients: list[Reply]
    chunks: list[Reply] = field(default_factory=list)  # one per BDAT, the LAST one's last

    @property
    def final(self) -> Reply:
        return self.chunks[-1] if self.chunks else self.recipients[-1]


class BdatClient:
    def __init__(self, port: int, *, helo: str = "client.sender.test", timeout: float = 60) -> None:
        self.wire = Wire(port, timeout=timeout)
        greeting = self.wire.reply()
        if greeting.code != 220:
            raise ConnectionError(f"not greeted: {greeting.text}")
        ehlo = self.wire.command(f"EHLO {helo}")
        self.extensions = {line.split(" ")[0].upper() for line in ehlo.lines[1:]}
        if "CHUNKING" not in self.extensions:
            raise ConnectionError(f"the server does not offer CHUNKING: {ehlo.text}")

    def __enter__(self) -> BdatClient:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.wire.command("QUIT")
        except OSError:
            pass
        self.wire.close()

    def send(self, sender: str, recipients: list[str], message: bytes, chunk_size: int = 65536) -> Sent:
        """One transaction, pipelined; every reply is read, also those after a refusal (RFC 3030 4.2)."""
        chunks = [message[i : i + chunk_size] for i in range(0, len(message), chunk_size)] or [b""]
        stream = [f"MAIL FROM:<{sender}>\r\n".encode(), *(f"RCPT TO:<{r}>\r\n".encode() for r in recipients)]
        for number, chunk in enumerate(chunks):
            last = " LAST" if number == len(chunks) - 1 else ""
            stream.append(f"BDAT {len(chunk)}{last}\r\n".encode() + chunk)
        writer = threading.Thread(target=self.wire.send, args=(b"".join(stream),))
        writer.start()
        try:
            sent = Sent(self.wire.reply(), [self.wire.reply() for _ in recipients])
            sent.chunks = [self.wire.reply() for _ in chunks]
        finally:
            writer.join(timeout=60)
        return sent

    def command(self, line: str) -> Reply:
        return self.wire.command(line)

    def send_with_data(self, sender: str, recipients: list[str], message: bytes) -> Reply:
        """The same transaction the classic way (DATA, dot-stuffed), for comparison; the last reply."""
        self.wire.command(f"MAIL FROM:<{sender}>")
        for recipient in recipients:
            self.wire.command(f"RCPT TO:<{recipient}>")
        data = self.wire.command("DATA")
        if data.code != 354:
            return data
        stuffed = b"\r\n".join(b"." + line if line.startswith(b".") else line for line in message.split(b"\r\n"))
        self.wire.send(stuffed + (b"" if stuffed.endswith(b"\r\n") else b"\r\n") + b".\r\n")
        return self.wire.reply()
