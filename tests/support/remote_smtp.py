"""A scripted far-side SMTP server for tests that need another MTA to talk to (Postfix relaying to it).

One thread with its own event loop on loopback; `rcpt` decides each recipient's reply, every
other command gets a plain 250 (354 for DATA, 221 for QUIT). No extensions are offered, so the
client speaks plain SMTP with DATA.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from tests.support.net import free_port, wait_port


@contextmanager
def remote_smtp(rcpt: Callable[[str], str], data_reply: str = "250 2.0.0 Ok: queued") -> Iterator[int]:
    """Serve until the block ends; yields the port. `rcpt(address)` is the reply to RCPT TO:<address>."""
    port = free_port()
    loop = asyncio.new_event_loop()
    stopped = asyncio.Event()

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await converse(reader, writer)
        except ConnectionError:
            pass  # the client went away
        writer.close()

    async def converse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 remote.test ESMTP\r\n")
        while line := await reader.readline():
            verb, _, arg = line.decode("utf-8", "replace").strip().partition(" ")
            verb = verb.upper()
            if verb == "RCPT":
                reply = rcpt(arg.partition(":")[2].strip().strip("<>"))
            elif verb == "DATA":
                writer.write(b"354 go ahead\r\n")
                while await reader.readline() not in (b".\r\n", b""):
                    pass
                reply = data_reply
            elif verb == "QUIT":
                writer.write(b"221 2.0.0 Bye\r\n")
                break
            else:
                reply = "250 remote.test" if verb in ("EHLO", "HELO") else "250 2.0.0 Ok"
            writer.write(reply.encode() + b"\r\n")

    async def serve() -> None:
        server = await asyncio.start_server(session, "127.0.0.1", port)
        async with server:
            await stopped.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    try:
        wait_port(port)
        yield port
    finally:
        loop.call_soon_threadsafe(stopped.set)
        thread.join(timeout=10)
        loop.close()
