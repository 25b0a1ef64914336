"""The POP3 server: listeners, connection limits and what all sessions share.

One `Pop3Session` (pop3/session.py) per connection speaks the protocol; this module owns the
shared state: the mail store, the login guard, the mailbox locks (flocks, via deliver/maildir.py)
and a bound on concurrent password checks, since each argon2 verification takes tens of
milliseconds of CPU and 64 MiB of memory.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import ssl
import time
from collections import Counter
from typing import TYPE_CHECKING, Final

from mailwarden.config import Config, parse_hostport
from mailwarden.deliver.maildir import Maildirs
from mailwarden.listening import shown
from mailwarden.loginguard import LoginGuard
from mailwarden.mailboxes import hash_password, verify_password
from mailwarden.refs import RefGenerator
from mailwarden.store import Store

if TYPE_CHECKING:
    from mailwarden.pop3.session import Pop3Session

log = logging.getLogger(__name__)

CONCURRENT_PASSWORD_CHECKS: Final = 2


class Pop3Server:
    def __init__(self, config: Config, store: Store, *, refs: RefGenerator, tls_context: ssl.SSLContext | None) -> None:
        self.config = config
        self.settings = config.pop3
        self.store = store
        self.refs = refs
        self.tls_context = tls_context
        self.node = config.node.name
        self.maildirs = Maildirs(config.path(config.mail.maildir_root))
        settings = config.pop3
        self.guard = LoginGuard(
            base_delay=settings.auth_failure_delay,
            max_delay=settings.auth_failure_delay_max,
            max_failures=settings.auth_max_failures,
            lock_seconds=settings.auth_lock_seconds,
        )
        self.sessions: set[Pop3Session] = set()
        self.per_ip: Counter[str] = Counter()
        self.shutting_down = False
        self._servers: list[asyncio.AbstractServer] = []
        self._password_checks = asyncio.Semaphore(CONCURRENT_PASSWORD_CHECKS)
        # Unknown users are checked against this, so that a reply's timing does not reveal whether a mailbox exists.
        self._decoy_hash = hash_password(secrets.token_urlsafe(16))

    @property
    def stream_limit(self) -> int:
        """Bytes a line may have before the reader gives up on it (SASL responses may exceed a command line)."""
        return max(self.settings.max_command_line, 4096)

    async def start(self) -> list[str]:
        from mailwarden.pop3.session import Pop3Session

        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await Pop3Session(self, reader, writer).run()

        bound: list[str] = []
        for address in self.settings.listen:
            host, port = parse_hostport(address)
            server = await asyncio.start_server(
                accept, host=host, port=port, limit=self.stream_limit, reuse_address=True, backlog=512
            )
            self._servers.append(server)
            bound.extend(shown(s) for s in server.sockets)
        return bound

    async def stop(self, grace: float = 10.0) -> None:
        """Stop listening and end every session; a session not at QUIT deletes nothing."""
        self.shutting_down = True
        for server in self._servers:
            server.close()
        for session in list(self.sessions):
            session.hang_up("-ERR [SYS/TEMP] Server shutting down; nothing was deleted in this session")
        deadline = time.monotonic() + grace
        while self.sessions and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        for server in self._servers:
            await server.wait_closed()

    async def check_password(self, password_hash: str | None, password: str) -> bool:
        async with self._password_checks:
            matches = await asyncio.to_thread(verify_password, password_hash or self._decoy_hash, password)
        return matches and password_hash is not None
