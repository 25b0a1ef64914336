"""Golden SMTP transcripts: the file format, and a player that replays one against a real server.

A transcript is one client/server dialogue, like Postfix's smtpd `*.ref` files:

    # comment lines are skipped
    S: 220 <HOST> ESMTP mailwarden        the server's reply lines, exactly (CRLF checked, not shown)
    C: EHLO client.sender.test            a client line, sent with CRLF
    D: Subject: hello                     message content: sent like a C: line (the letter is for the reader)
    M: Received: from ...                 a stored message's line (under `-- stored for`), CRLF-separated
    -- directive                          what the client does besides sending (below)

Consecutive client lines are sent in one write (that is pipelining), and then exactly as many
replies are read as the S: lines that follow hold; so `C: MAIL ...`, `C: RCPT ...`, `C: DATA`
followed by three replies is one pipelined group. What the server actually sent is rendered in the
same format and compared with the file; refs become `<REF1>`, `<REF2>` ... in order of first
appearance, our hostname `<HOST>`, the server's directory `<ROOT>`, a Received date `<DATE>`, the
seconds a pregreet refusal measured `<SECONDS>`.

Escapes in client lines: `\\r`, `\\n`, `\\t`, `\\0`, `\\xHH`, `\\\\`; `\\{600*x}` is 600 times `x` (the text
may hold escapes, not `}`); a line ending in `\\c` is sent without its CRLF (as `echo` has it).
Stored messages are shown with the same escapes, split at CRLF.

Directives: `-- from 127.0.0.3` (the client's source address), `-- holding 2 connections from
127.0.0.2` (opened and greeted before the dialogue, QUIT after it), `-- client starts TLS`,
`-- client half-closes` (shuts its sending side after what it sent so far), `-- stored for
bob@example.test` (the message of the last 250 with a ref, from the Maildir), and `-- closed by
the server`, which the player writes when the server closes the connection (nothing after it is
played but `-- stored for`).
"""

from __future__ import annotations

import re
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.mailwarden import Mailwarden
from tests.support.wire import Closed, Reply, Wire

CLOSED = "-- closed by the server"
READ_TIMEOUT = 30.0
BIG_WRITE = 256 * 1024  # larger writes are sent from a thread while the replies are read
_REF = re.compile(r"ref=([0-9A-Z]{12})")
_REPLY_END = re.compile(r"^S: \d{3}(?: |$)")
_REPEAT = re.compile(r"\\\{(\d+)\*([^}]*)\}")
_ESCAPE = re.compile(rb"\\(x[0-9a-fA-F]{2}|[rnt0\\])")
_DATE = re.compile(r"[A-Z][a-z]{2}, \d{1,2} [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d [+-]\d{4}")
_MEASURED = re.compile(r"\b\d+\.\d+ seconds after connecting")  # the pregreet check's reply
_SIMPLE = {b"r": b"\r", b"n": b"\n", b"t": b"\t", b"0": b"\0", b"\\": b"\\"}


def client_bytes(text: str) -> bytes:
    """The bytes a client line stands for (escapes decoded, CRLF added unless it ends in `\\c`)."""
    text = _REPEAT.sub(lambda m: m.group(2) * int(m.group(1)), text)
    ending = b"\r\n"
    if text.endswith("\\c"):
        text, ending = text[:-2], b""
    raw = _ESCAPE.sub(lambda m: _SIMPLE.get(m.group(1)) or bytes([int(m.group(1)[1:], 16)]), text.encode("utf-8"))
    return raw + ending


def shown(data: bytes) -> str:
    """Bytes as a transcript shows them: printable UTF-8 as it is, everything else escaped."""
    text = data.decode("utf-8", "backslashreplace")
    out = []
    for char in text:
        if char == "\\":
            out.append("\\\\")
        elif char in "\r\n\t\0":
            out.append({"\r": "\\r", "\n": "\\n", "\t": "\\t", "\0": "\\0"}[char])
        elif ord(char) < 32 or ord(char) == 127:
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(char)
    # backslashreplace wrote undecodable bytes as \xHH, whose backslash was doubled above
    return re.sub(r"\\\\(x[0-9a-f]{2})", r"\\\1", "".join(out))


def golden(path: Path) -> list[str]:
    """The transcript's lines without comments and trailing blanks."""
    return [line.rstrip() for line in path.read_text().splitlines() if not line.startswith("#")]


@dataclass
class Played:
    lines: list[str] = field(default_factory=list)  # rendered, not yet normalised
    replies: list[Reply] = field(default_factory=list)  # every reply as sent

    @property
    def refusals(self) -> list[Reply]:
        return [r for r in self.replies if r.code >= 400]


class Player:
    """Replays one golden transcript against `server`, rendering what happened."""

    def __init__(self, server: Mailwarden, host: str) -> None:
        self.server = server
        self.host = host

    def play(self, lines: list[str]) -> str:
        played = self.run(lines)
        return self.normalised(played.lines)

    def run(self, lines: list[str]) -> Played:
        played = Played()
        source: str | None = None
        with ExitStack() as stack:
            held: list[Wire] = []
            stack.callback(_release, held)
            wire: Wire | None = None
            outgoing = b""
            closed = False
            index = 0
            while index < len(lines):
                line = lines[index]
                index += 1
                kind = line[:2]
                if closed and not line.startswith("-- stored for "):
                    continue
                if kind in ("C:", "D:"):
                    played.lines.append(line)
                    outgoing += client_bytes(line[3:] if line[2:3] == " " else line[2:])
                    continue
                if kind == "M:":
                    continue
                if kind == "S?" or line == CLOSED:
                    continue
                if wire is None and (kind == "S:" or line.startswith("-- client")):
                    wire = stack.enter_context(Wire(self.server.smtp_port, source=source, timeout=READ_TIMEOUT))
                if kind == "S:":
                    start = index - 1
                    while index < len(lines) and lines[index].startswith("S:"):
                        index += 1
                    assert wire is not None
                    with _sending(wire, outgoing):
                        closed = self._read(wire, sum(1 for s in lines[start:index] if _REPLY_END.match(s)), played)
                    outgoing = b""
                    continue
                played.lines.append(line)
                directive = line[3:]
                if directive.startswith("from "):
                    source = directive.removeprefix("from ")
                elif directive.startswith("holding "):
                    number, _, address = directive.removeprefix("holding ").partition(" connections from ")
                    if not address:
                        number, _, address = directive.removeprefix("holding ").partition(" connection from ")
                    held.extend(_held(self.server.smtp_port, int(number), address))
                elif directive == "client waits":  # for a reply it did not ask for (a timeout, the greeting)
                    assert wire is not None
                    _send(wire, outgoing)
                    outgoing = b""
                elif directive == "client starts TLS":
                    assert wire is not None
                    _send(wire, outgoing)
                    outgoing = b""
                    if wire.pending():
                        played.lines.append(f"S? unexpected before TLS: {shown(wire.pending())}")
                    context = ssl.create_default_context()
                    context.check_hostname = False
                    context.verify_mode = ssl.CERT_NONE
                    wire.sock = context.wrap_socket(wire.sock, server_hostname=self.host)
                elif directive == "client half-closes":
                    assert wire is not None
                    _send(wire, outgoing)
                    outgoing = b""
                    wire.sock.shutdown(socket.SHUT_WR)
                elif directive.startswith("stored for "):
                    played.lines.extend(self._stored(directive.removeprefix("stored for "), played.replies))
                else:
                    raise ValueError(f"unknown directive: {line}")
            if wire is not None and not closed:
                _send(wire, outgoing)
                if wire.closed_by_server(timeout=READ_TIMEOUT):
                    if wire.pending():
                        played.lines.append(f"S? unexpected: {shown(wire.pending())}")
                    played.lines.append(CLOSED)
        return played

    def _read(self, wire: Wire, count: int, played: Played) -> bool:
        """Read `count` replies into `played`; True when the server closed the connection instead."""
        for _ in range(count):
            lines: list[str] = []
            try:
                while True:
                    raw = wire.raw_line()
                    text = raw.decode("utf-8", "replace")
                    if not raw.endswith(b"\r\n") or b"\r" in raw[:-2] or "\ufffd" in text:
                        lines.append(f"S? {shown(raw)}")  # not a well-formed reply line: shown as it came
                        break
                    lines.append(f"S: {text[:-2]}")
                    if text[3:4] != "-":
                        break
            except Closed:
                played.lines.extend(lines)
                if wire.pending():
                    played.lines.append(f"S? unexpected: {shown(wire.pending())}")
                played.lines.append(CLOSED)
                return True
            except TimeoutError:
                played.lines.extend([*lines, f"-- no reply within {READ_TIMEOUT:.0f} s"])
                return True
            played.lines.extend(lines)
            if lines and lines[-1].startswith("S: ") and len(lines[-1]) >= 6:
                played.replies.append(Reply(int(lines[0][3:6]), [x[7:] for x in lines]))
        return False

    def _stored(self, mailbox: str, replies: list[Reply]) -> Iterator[str]:
        accepted = [r for r in replies if r.code == 250 and _REF.search(r.text)]
        if not accepted:
            yield "-- nothing was accepted"
            return
        ref = _REF.findall(accepted[-1].text)[-1]
        marker = f"X-Mailwarden-Ref: {ref}\r\n".encode()
        found = [m for m in self.server.messages(mailbox) if marker in m]
        if len(found) != 1:
            yield f"-- {len(found)} messages with ref {ref} for {mailbox}"
            return
        pieces = found[0].split(b"\r\n")
        for number, piece in enumerate(pieces):
            last = number == len(pieces) - 1
            if last and not piece:
                break
            yield ("M: " + shown(piece) + ("\\c" if last else "")).rstrip()

    def normalised(self, lines: list[str]) -> str:
        """Refs, hostname, root and dates in what the server wrote replaced; what the client sent stays."""
        numbers: dict[str, str] = {}
        root = str(self.server.root)

        def number(ref: str) -> str:
            return numbers.setdefault(ref, f"<REF{len(numbers) + 1}>")

        out = []
        for line in lines:
            if line.startswith(("S: ", "S? ", "M: ")):
                line = _REF.sub(lambda m: "ref=" + number(m.group(1)), line)
                for ref, name in numbers.items():
                    line = line.replace(ref, name)
                line = _DATE.sub("<DATE>", line.replace(self.host, "<HOST>").replace(root, "<ROOT>"))
                line = _MEASURED.sub("<SECONDS> seconds after connecting", line)
            out.append(line)
        return "\n".join(out)


@contextmanager
def _sending(wire: Wire, data: bytes) -> Iterator[None]:
    """Send `data` while the body reads the replies: a large write may need the server to answer first
    (a server that replied to lines of a message would otherwise block us both)."""
    if len(data) <= BIG_WRITE:
        _send(wire, data)
        yield
        return

    sender = threading.Thread(target=_send, args=(wire, data))
    sender.start()
    try:
        yield
    finally:
        sender.join(timeout=READ_TIMEOUT)


def _send(wire: Wire, data: bytes) -> None:
    if not data:
        return
    try:
        wire.send(data)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server closed: reading says so


def _held(port: int, number: int, address: str) -> list[Wire]:
    wires = []
    for _ in range(number):
        wire = Wire(port, source=address, timeout=READ_TIMEOUT)
        wires.append(wire)
        assert wire.reply().code == 220, "a held connection was not greeted"
    return wires


def _release(held: list[Wire]) -> None:
    """QUIT and wait for the close, so the server has counted the connection out before the next dialogue."""
    for wire in held:
        try:
            wire.command("QUIT")
            wire.closed_by_server(timeout=READ_TIMEOUT)
        except (Closed, OSError):
            pass
        wire.close()
