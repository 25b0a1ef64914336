"""Which milter protocol layer: the maintained Python implementations against our own, measured.

    pip install kilter-protocol purepythonmilter pymilter    # pymilter builds on Debian's libmilter-dev
    python bench/milter_libraries.py                         # correctness probes, then speed (a few minutes)
    python bench/milter_libraries.py --sessions 500 --rounds 1

Each implementation runs the same trivial filter in a process of its own on a loopback port: it
asks for the macros it needs in its OPTNEG (as our milter does), continues every stage and at the
end of the message inserts one header on top whose value is the queue id (`i`) and the client
address it was told - so a wrong macro or address decoding shows in the header. A driver plays
Postfix 3.7's side of the protocol (the packets as a real Postfix sends them: OPTNEG with every
action and option offered, each stage's macros before its command, the header values with their
leading space, the body as one CRLF chunk, ABORT and QUIT at the end) and honours what the filter
negotiated (stages it does not want are not sent, stages needing no reply are not waited for).

Correctness probes, each on a fresh connection: the whole session (the inserted header carries the
right queue id and address), an IPv6 client, and bad input (Postfix never sends it, but a broken
network or peer can): a truncated packet, an unknown command, a length of 2 GB, a macro packet of
4 MiB, a macro string without its NUL. For bad input the wanted outcome is that the filter closes
the connection at once and keeps serving others; "waits" means it kept the connection open for
more than two seconds (it would hold a Postfix process until Postfix's timeout).

Speed: sessions per second, one session at a time and 20 at once (as 20 smtpd processes would),
the median of --rounds rounds of --sessions sessions, all implementations alternating.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from bench.processes import serve_forever  # noqa: E402

HEAD = struct.Struct("!I")
QUEUE_ID = "4F1A2B3C4D"
CLIENT = "192.0.2.7"
CLIENT6 = "2001:db8::7"
WANTED_MACROS = {
    0: "{client_addr} {client_name} {daemon_name} j _",
    2: "i {mail_addr} {auth_authen}",
    3: "i {rcpt_addr}",
    4: "i",
    5: "i",
    6: "i",
}
BODY = (b"Hello Bob,\r\n" + b"x" * 70 + b"\r\n") * 120  # about 10 kB
HEADERS = [
    ("Received", " from client.sender.test (client.sender.test [192.0.2.7])\n\tby mx.example.test"),
    ("From", " Alice <alice@sender.test>"),
    ("To", " bob@example.test"),
    ("Subject", " quarterly figures"),
    ("Date", " Mon, 7 Dec 2026 10:00:00 +0000"),
    ("Message-Id", " <20261207100000.1234@sender.test>"),
    ("MIME-Version", " 1.0"),
    ("Content-Type", " text/plain; charset=utf-8"),
    ("Content-Transfer-Encoding", " 8bit"),
    ("X-Mailer", " bench 1.0"),
]
TIMEOUT = 2.0  # seconds a filter may take to close on bad input before it counts as "waits"


# ---------------------------------------------------------------------------- Postfix's side
def pkt(command: str, data: bytes = b"") -> bytes:
    return HEAD.pack(len(data) + 1) + command.encode() + data


def cstrings(*values: str) -> bytes:
    return b"".join(v.encode() + b"\0" for v in values)


def macro(stage: str, **values: str) -> bytes:
    names = {"client_addr": "{client_addr}", "client_name": "{client_name}", "daemon_name": "{daemon_name}"}
    flat = [x for k, v in values.items() for x in (names.get(k, "{" + k + "}" if len(k) > 1 else k), v)]
    return pkt("D", stage.encode() + cstrings(*flat))


NO = {"C": 0x1, "H": 0x2, "M": 0x4, "R": 0x8, "B": 0x10, "L": 0x20, "N": 0x40, "T": 0x200}
NR = {"C": 0x1000, "H": 0x2000, "M": 0x4000, "R": 0x8000, "T": 0x10000, "N": 0x40000, "B": 0x80000, "L": 0x80}


class Session:
    """Postfix's side of one milter connection over asyncio streams."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.options = 0

    async def read(self) -> tuple[str, bytes]:
        (length,) = HEAD.unpack(await self.reader.readexactly(4))
        data = await self.reader.readexactly(length)
        return chr(data[0]), data[1:]

    async def negotiate(self) -> None:
        self.writer.write(pkt("O", struct.pack("!III", 6, 0x1FF, 0x1FFFFF)))
        command, data = await self.read()
        assert command == "O", command
        _, _, self.options = struct.unpack_from("!III", data)

    async def step(self, command: str, data: bytes = b"", macros: bytes = b"") -> str | None:
        if self.options & NO.get(command, 0):
            return None
        self.writer.write(macros + pkt(command, data))
        if self.options & NR.get(command, 0):
            return None
        reply, _ = await self.read()
        return reply

    async def whole(self, client: str = CLIENT) -> list[tuple[str, bytes]]:
        """One complete session; returns what the filter sent at the end of the message."""
        await self.negotiate()
        family = "6" if ":" in client else "4"
        await self.step(
            "C",
            cstrings("client.sender.test") + family.encode() + struct.pack("!H", 40000) + cstrings(client),
            macro("C", client_addr=client, client_name="client.sender.test", daemon_name="mx", j="mx", _="x"),
        )
        await self.step("H", cstrings("client.sender.test"), macro("H"))
        await self.step("M", cstrings("<alice@sender.test>", "SIZE=12000"), macro("M", mail_addr="alice@sender.test"))
        await self.step("R", cstrings("<bob@example.test>"), macro("R", rcpt_addr="bob@example.test"))
        await self.step("T", b"", macro("T", i=QUEUE_ID))
        for name, value in HEADERS:
            await self.step("L", cstrings(name, value), macro("L", i=QUEUE_ID))
        await self.step("N", b"", macro("N", i=QUEUE_ID))
        await self.step("B", BODY, macro("B", i=QUEUE_ID))
        self.writer.write(macro("E", i=QUEUE_ID) + pkt("E"))
        answers = []
        while True:
            command, data = await self.read()
            answers.append((command, data))
            if command in "cartyd":
                break
        self.writer.write(pkt("A") + pkt("Q"))
        await self.writer.drain()
        return answers


async def open_session(port: int) -> Session:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    return Session(reader, writer)


async def whole_session(port: int, client: str = CLIENT) -> list[tuple[str, bytes]]:
    session = await open_session(port)
    try:
        return await session.whole(client)
    finally:
        session.writer.close()


# ---------------------------------------------------------------------------- probes
def header_value(answers: list[tuple[str, bytes]]) -> str | None:
    for command, data in answers:
        if command in "ih":
            parts = (data[4:] if command == "i" else data).split(b"\0")
            return parts[1].decode().strip()
    return None


async def probe_session(port: int, client: str) -> str:
    try:
        answers = await asyncio.wait_for(whole_session(port, client), 10)
    except Exception as error:
        return f"failed ({type(error).__name__})"
    value = header_value(answers)
    return "ok" if value == f"{QUEUE_ID} {client}" else f"wrong header {value!r}"


async def probe_bad(port: int, send: bytes, then_close: bool) -> str:
    """Send bad bytes after a good negotiation; does the filter close (and serve the next connection)?

    `then_close`: we close our side after them, as a Postfix process that died mid-packet would.
    """
    session = await open_session(port)
    try:
        await session.negotiate()
        started = time.monotonic()
        try:
            session.writer.write(send)
            await session.writer.drain()
            if then_close:
                session.writer.write_eof()
            while True:  # whatever it answers, it must close
                chunk = await asyncio.wait_for(session.reader.read(65536), TIMEOUT)
                if not chunk:
                    break
        except TimeoutError:
            outcome = "waits"
        except ConnectionError:
            outcome = f"closes ({time.monotonic() - started:.2f}s)"
        else:
            outcome = f"closes ({time.monotonic() - started:.2f}s)"
    finally:
        session.writer.close()
    after = await probe_session(port, CLIENT)
    return outcome if after == "ok" else f"{outcome}, then broken ({after})"


BAD_INPUT: dict[str, tuple[bytes, bool]] = {
    "truncated packet": (HEAD.pack(100) + b"Hshort", True),
    "unknown command": (pkt("Z", b"whatever\0"), False),
    "length of 2 GB": (HEAD.pack(0x7FFFFFF0) + b"D", False),
    "macro of 4 MiB": (pkt("D", b"C" + cstrings("{client_name}", "x" * (4 << 20))), False),
    "string without NUL": (pkt("H", b"client.sender.test"), False),
}


# ---------------------------------------------------------------------------- the filters
def serve_ours(port: int) -> None:
    from mailwarden.mta import milter_protocol as mp

    options = mp.NR_HEADER | mp.HEADER_LEADING_SPACE
    wanted = {mp.CONNECT: WANTED_MACROS[0], mp.MAIL: WANTED_MACROS[2], mp.RCPT: WANTED_MACROS[3]}
    wanted |= {mp.DATA: "i", mp.END_OF_MESSAGE: "i", mp.END_OF_HEADERS: "i"}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        known: dict[str, str] = {}
        packets = mp.PacketReader(reader, 1 << 20)
        try:
            while True:
                command, data = await packets.next()
                if command == mp.NEGOTIATE:
                    mp.negotiation(data)
                    writer.write(mp.negotiation_reply(mp.ADD_HEADERS | mp.SET_SYMBOL_LIST, options, wanted))
                elif command == mp.MACRO:
                    known.update(mp.macros(data)[1])
                elif command == mp.CONNECT:
                    mp.connect_info(data)
                    writer.write(mp.packet(mp.CONTINUE))
                elif command == mp.HELO:
                    mp.strings(data, 1)
                    writer.write(mp.packet(mp.CONTINUE))
                elif command in (mp.MAIL, mp.RCPT):
                    mp.strings(data)
                    writer.write(mp.packet(mp.CONTINUE))
                elif command == mp.HEADER:
                    mp.header(data)
                elif command == mp.END_OF_MESSAGE:
                    value = f"{known.get('i')} {known.get('{client_addr}')}"
                    writer.write(mp.insert_header(0, "X-Bench", value) + mp.packet(mp.CONTINUE))
                elif command in (mp.ABORT, mp.QUIT_NEW_CONNECTION):
                    continue
                elif command == mp.QUIT:
                    return
                else:
                    writer.write(mp.packet(mp.CONTINUE))
                await writer.drain()
        except (mp.ProtocolError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    run_asyncio(handle, port)


def serve_kilter(port: int) -> None:
    from kilter.protocol import messages as km
    from kilter.protocol.buffer import SimpleBuffer
    from kilter.protocol.core import FilterProtocol

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        proto = FilterProtocol()
        inbound, outbound = SimpleBuffer(1 << 20), SimpleBuffer(1 << 17)
        known: dict[str, str] = {}
        try:
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    return
                inbound[:] = chunk  # raises InsufficientSpace past the buffer
                for message in proto.read_from(inbound):
                    answer: list[km.Message] = []
                    match message:
                        case km.Negotiate():
                            macros = {km.Stage(stage): set(names.split()) for stage, names in WANTED_MACROS.items()}
                            answer.append(
                                km.Negotiate(
                                    6,
                                    km.ActionFlags.ADD_HEADERS | km.ActionFlags.SETSYMLIST,
                                    km.ProtocolFlags.NR_HEADER | km.ProtocolFlags.HEADER_LEADING_SPACE,
                                    macros,
                                )
                            )
                        case km.Macro():
                            known.update(message.macros)
                        case km.EndOfMessage():
                            value = f"{known.get('i')} {known.get('{client_addr}')}"
                            answer += [km.InsertHeader(0, "X-Bench", value.encode()), km.Continue()]
                        case km.Close():
                            return
                        case km.Abort():
                            pass
                        case _:
                            if proto.needs_response(message):
                                answer.append(km.Continue())
                    for item in answer:
                        proto.write_to(outbound, item)
                if outbound.filled:
                    writer.write(outbound[:].tobytes())
                    del outbound[:]
                    await writer.drain()
        except Exception as error:
            if os.environ.get("BENCH_DEBUG"):
                import traceback

                traceback.print_exception(error)
        finally:
            writer.close()

    run_asyncio(handle, port)


def serve_purepythonmilter(port: int) -> None:
    import logging

    from purepythonmilter import Connect, Continue, EndOfMessage, InsertHeader, PurePythonMilter
    from purepythonmilter.protocol.definitions import MacroStage

    logging.disable(logging.CRITICAL)  # its per-packet logging would be measured otherwise

    async def on_end_of_message(cmd: EndOfMessage) -> Continue:
        value = f"{cmd.macros.get('i')} {seen.get('{client_addr}')}"
        return Continue(manipulations=[InsertHeader(headername="X-Bench", headertext=value, index=0)])

    seen: dict[str, str] = {}

    async def on_connect(cmd: Connect) -> None:
        seen.update(cmd.macros)

    # It reads the hooks' annotations to decide what to negotiate; give them as objects, not strings.
    on_connect.__annotations__ = {"cmd": Connect, "return": None}
    on_end_of_message.__annotations__ = {"cmd": EndOfMessage, "return": Continue}
    stages = {MacroStage(k): set(v.split()) for k, v in WANTED_MACROS.items()}
    app = PurePythonMilter(
        hook_on_connect=on_connect,
        hook_on_end_of_message=on_end_of_message,
        can_add_headers=True,
        restrict_symbols=stages,
        headers_with_leading_space=True,
    )
    app.run_server(host="127.0.0.1", port=port)


def serve_pymilter(port: int) -> None:
    import Milter

    class Bench(Milter.Base):  # type: ignore[misc]
        def __init__(self) -> None:
            self.client = ""

        @Milter.noreply  # type: ignore[misc]
        def header(self, name: str, value: str) -> int:
            return Milter.CONTINUE

        def connect(self, hostname: str, family: int, hostaddr: tuple[str, int]) -> int:
            self.client = self.getsymval("{client_addr}") or hostaddr[0]
            return Milter.CONTINUE

        def eom(self) -> int:
            self.addheader("X-Bench", f"{self.getsymval('i')} {self.client}", 0)
            return Milter.CONTINUE

        def negotiate(self, opts: list[int]) -> int:
            # Milter.Base.setsymlist hands the C layer bytes where it wants str (TypeError on
            # Python 3), so the macro lists go to the C context directly.
            for stage, names in WANTED_MACROS.items():
                self._ctx.setsymlist(stage, names)
            result: int = super().negotiate(opts)
            return result

    Milter.factory = Bench
    Milter.set_flags(Milter.ADDHDRS)
    Milter.runmilter("bench", f"inet:{port}@127.0.0.1", timeout=30)


def run_asyncio(handle: Callable[..., object], port: int) -> None:
    serve_forever(lambda: asyncio.start_server(handle, "127.0.0.1", port, backlog=1024))  # type: ignore[arg-type]


FILTERS: dict[str, tuple[str, Callable[[int], None]]] = {
    "mailwarden (ours)": ("", serve_ours),
    "kilter-protocol 0.6.0": ("kilter.protocol", serve_kilter),
    "purepythonmilter 0.0.1": ("purepythonmilter", serve_purepythonmilter),
    "pymilter 1.0.5 (libmilter)": ("Milter", serve_pymilter),
}


def available(module: str) -> bool:
    if not module:
        return True
    import importlib.util

    return importlib.util.find_spec(module) is not None


def start(name: str) -> tuple[subprocess.Popen[bytes], int]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve", name, str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process, port
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{name} did not start")


# ---------------------------------------------------------------------------- speed
async def sessions_per_second(port: int, count: int, parallel: int) -> float:
    queue = iter(range(count))

    async def worker() -> None:
        for _ in queue:
            answers = await whole_session(port)
            assert header_value(answers) == f"{QUEUE_ID} {CLIENT}", answers

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(parallel)))
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serve", nargs=2, metavar=("NAME", "PORT"), help=argparse.SUPPRESS)
    parser.add_argument("--sessions", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.serve:
        FILTERS[args.serve[0]][1](int(args.serve[1]))
        return
    names = [name for name, (module, _) in FILTERS.items() if available(module)]
    missing = [name for name in FILTERS if name not in names]
    if missing:
        print(f"not installed, left out: {', '.join(missing)}")
    print(f"load: {os.getloadavg()[0]:.2f}")
    running = {name: start(name) for name in names}
    try:
        print("\ncorrectness (each on a fresh connection; bad input: the filter should close at once)")
        rows = {"session": lambda p: probe_session(p, CLIENT), "IPv6 client": lambda p: probe_session(p, CLIENT6)}
        rows |= {label: (lambda p, b=bad: probe_bad(p, *b)) for label, bad in BAD_INPUT.items()}
        width = max(len(n) for n in names)
        print(f"{'probe':<20} " + "  ".join(f"{n:<{width}}" for n in names))
        for label, probe in rows.items():
            cells = [asyncio.run(probe(running[name][1])) for name in names]
            print(f"{label:<20} " + "  ".join(f"{c:<{width}}" for c in cells))
        print(f"\nspeed: sessions/s, median of {args.rounds} rounds of {args.sessions} sessions (min-max)")
        for parallel in (1, 20):
            results: dict[str, list[float]] = {name: [] for name in names}
            for _ in range(args.rounds):
                for name in names:
                    port = running[name][1]
                    results[name].append(asyncio.run(sessions_per_second(port, args.sessions, parallel)))
            for name in names:
                values = results[name]
                print(
                    f"  {parallel:>2} at once  {name:<{width}} {statistics.median(values):8.0f}"
                    f"  ({min(values):.0f}-{max(values):.0f})"
                )
        print(f"load: {os.getloadavg()[0]:.2f}")
    finally:
        for process, _ in running.values():
            process.terminate()
            process.wait()


if __name__ == "__main__":
    main()
