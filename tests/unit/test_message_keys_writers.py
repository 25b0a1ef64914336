"""Our own writers stamp each event's message key themselves (issue 12, item 1).

The gateway: the transaction's ref on every event of the transaction, none on the connection's
own events (connect, HELO, disconnect). Our POP3 server: the ref of the delivery it reads
(from the message's X-Mailwarden-Ref) on every retrieval and deletion. The keys are checked as
the writer hands the events over, before the store could give them any.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from mailwarden.config import Config
from mailwarden.events import Event
from mailwarden.mailboxes import hash_password
from mailwarden.pop3.server import Pop3Server
from mailwarden.refs import RefGenerator
from mailwarden.store import Store
from mailwarden.store.base import Committed
from mailwarden.store.sqlite import SqliteStore
from tests.support.net import free_port
from tests.unit.test_gateway_in_process import MESSAGE, run_gateway


class Recording(SqliteStore):
    """Notes (source, kind, ref, message key) of each event as its writer hands it over."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, batch_interval=0.001)
        self.handed: list[tuple[str, str, str | None, str | None]] = []

    def _note(self, events: Sequence[Event]) -> None:
        self.handed.extend((e.source, e.kind, e.ref, e.message_key) for e in events)

    def append(self, event: Event) -> None:
        self._note([event])
        super().append(event)

    def commit_soon(self, events: Sequence[Event], done: Committed) -> None:
        self._note(events)
        super().commit_soon(events, done)


TWO_TRANSACTIONS = [
    b"EHLO client.sender.test\r\n",
    b"MAIL FROM:<alice@sender.test>\r\n",
    b"RCPT TO:<nobody@example.test>\r\n",
    b"RSET\r\n",
    b"MAIL FROM:<alice@sender.test>\r\n",
    b"RCPT TO:<bob@example.test>\r\n",
    b"DATA\r\n",
    MESSAGE + b".\r\n",
    b"QUIT\r\n",
]


def pop3_session(tmp_path: Path, store: Store, mailbox: str, commands: list[bytes], node: str = "test") -> None:
    """A POP3 client of `mailbox` (password "secret") sending `commands` after logging in, to a POP3
    server of the node `node`."""
    port = free_port()
    config = Config(
        node={"name": node},  # type: ignore[arg-type]
        pop3={"listen": [f"127.0.0.1:{port}"], "allow_plaintext_auth": True},  # type: ignore[arg-type]
        mail={"domains": ["example.test"], "maildir_root": str(tmp_path / "var" / "mail")},  # type: ignore[arg-type]
        base_dir=tmp_path,
    )
    store.set_password(mailbox, hash_password("secret"))

    async def session() -> None:
        server = Pop3Server(config, store, refs=RefGenerator(node, wait_for_fresh_second=False), tls_context=None)
        await server.start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            await reader.readline()
            for command in [b"USER " + mailbox.encode(), b"PASS secret", *commands]:
                writer.write(command + b"\r\n")
                line = await reader.readline()
                if command.startswith(b"RETR") and line.startswith(b"+OK"):
                    while await reader.readline() != b".\r\n":
                        pass
            writer.close()
        finally:
            await server.stop(grace=5)

    asyncio.run(session())
    store.flush()


def test_the_gateway_and_pop3_stamp_the_transactions_ref_and_leave_the_connection_unkeyed(tmp_path: Path) -> None:
    store = Recording(tmp_path / "store.db")
    try:
        replies = run_gateway(tmp_path, store, TWO_TRANSACTIONS)
        assert replies[3].startswith("550 5.1.1") and replies[-2].startswith("250 2.0.0"), replies
        pop3_session(tmp_path, store, "bob@example.test", [b"RETR 1", b"DELE 1", b"QUIT"])
        gateway = [h for h in store.handed if h[0] == "gateway"]
        connection = [(kind, key) for _, kind, _, key in gateway if kind in ("connect", "helo", "disconnect")]
        assert connection == [("connect", None), ("helo", None), ("disconnect", None)]
        transactions = [
            (kind, ref, key) for _, kind, ref, key in gateway if kind not in ("connect", "helo", "disconnect")
        ]
        assert all(key == ref for _, ref, key in transactions), transactions
        refs = list(dict.fromkeys(ref for _, ref, _ in transactions))
        assert len(refs) == 2  # the refused transaction and the delivered one: two messages
        assert [kind for kind, ref, _ in transactions if ref == refs[0]] == ["mail", "reject"]
        delivered = refs[1]
        assert {kind for kind, ref, _ in transactions if ref == delivered} >= {
            "mail",
            "rcpt",
            "data",
            "deliver",
            "accept",
        }
        accesses = [
            (kind, key) for source, kind, _, key in store.handed if source == "pop3" and kind in ("retrieve", "delete")
        ]
        assert accesses == [("retrieve", delivered), ("delete", delivered)]
        others = {
            key for source, kind, _, key in store.handed if source == "pop3" and kind not in ("retrieve", "delete")
        }
        assert others == {None}  # logins and logouts belong to the POP3 session
    finally:
        store.close()
