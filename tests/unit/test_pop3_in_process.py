"""The POP3 server in this process, for what a real server cannot be made to do on demand:
a store that cannot record the deletions means nothing is deleted."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from mailwarden.config import Config
from mailwarden.deliver.maildir import Maildirs, Target
from mailwarden.events import Event
from mailwarden.mailboxes import hash_password
from mailwarden.pop3.server import Pop3Server
from mailwarden.refs import RefGenerator
from mailwarden.store import EventQuery, StoreError
from mailwarden.store.sqlite import SqliteStore
from tests.support.net import free_port


class UnwritableEvidence(SqliteStore):
    """A store whose disk fails when the deletions are to be committed."""

    async def durable(self, events: Sequence[Event] = ()) -> None:
        if events:
            raise StoreError("event store write failed: database or disk is full")
        await super().durable(events)


def test_deletions_that_cannot_be_recorded_are_not_done(tmp_path: Path) -> None:
    port = free_port()
    config = Config(
        pop3={"listen": [f"127.0.0.1:{port}"], "allow_plaintext_auth": True},  # type: ignore[arg-type]
        mail={"domains": ["example.test"], "maildir_root": str(tmp_path / "mail")},  # type: ignore[arg-type]
        base_dir=tmp_path,
    )
    store = UnwritableEvidence(tmp_path / "store.db")
    store.add_mailbox("bob@example.test", hash_password("secret"))
    maildirs = Maildirs(tmp_path / "mail")
    maildirs.deliver([Target("bob@example.test")], lambda handle: handle.write(b"Subject: x\r\n\r\nhi\r\n"))

    async def session() -> list[bytes]:
        server = Pop3Server(config, store, refs=RefGenerator("test", wait_for_fresh_second=False), tls_context=None)
        await server.start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            replies = [await reader.readline()]
            for command in (b"USER bob@example.test", b"PASS secret", b"DELE 1", b"QUIT"):
                writer.write(command + b"\r\n")
                replies.append(await reader.readline())
            writer.close()
            return replies
        finally:
            await server.stop(grace=5)

    try:
        replies = asyncio.run(session())
        assert replies[-1].startswith(b"-ERR [SYS/TEMP] The deletions could not be recorded, so nothing was deleted")
        assert len(maildirs.messages("bob@example.test")) == 1
        store.flush()
        kinds = [e.kind for e in store.query_events(EventQuery(source="pop3"))]
        assert "delete" not in kinds and kinds[-1] == "logout"
    finally:
        store.close()
