"""How a delivery handed to a mailbox server (Dovecot) is named on both sides of the hand-off.

The MTA (Postfix's `status=sent (...)`, our gateway's `detail.downstream_reply`) records Dovecot's
LMTP reply `250 2.0.0 <rcpt> SESSION Saved`; Dovecot logs the same SESSION with its delivery. Both
log the Message-ID, but Dovecot cuts it after 80 bytes. The ingest parsers and the trace join the
two sides with these helpers, also when the logs come from different hosts and imports.
"""

from __future__ import annotations

import re
from typing import Final

# Dovecot's session id (base64 of 16 bytes or more), with `:T2` for a further transaction and `:R2`
# for a further recipient of one LMTP connection.
_LMTP_SESSION: Final = re.compile(r"> ([A-Za-z0-9+/]{16,32}(?::[TR]\d+)*) Saved")
# mail_log and LMTP log header values through str_sanitize(value, 80): longer ones keep 77 bytes and `...`.
_LOGGED_BYTES: Final = 80


def lmtp_session(reply: str) -> str | None:
    """The LMTP session id in Dovecot's reply to a delivery, or None."""
    found = _LMTP_SESSION.search(reply)
    return found[1] if found else None


def same_lmtp_connection(session: str, other: str) -> bool:
    """Whether two session ids name one LMTP connection (they differ only in `:T2`/`:R2`)."""
    return session.partition(":")[0] == other.partition(":")[0]


def logged_message_ids(message_id: str) -> tuple[str, ...]:
    """`message_id` as Dovecot's log may show it: whole, or cut to 77 bytes plus `...`."""
    raw = message_id.encode("utf-8", "surrogateescape")
    if len(raw) <= _LOGGED_BYTES:
        return (message_id,)
    return message_id, raw[: _LOGGED_BYTES - 3].decode("utf-8", "ignore") + "..."


def cut_message_id_prefix(message_id: str) -> str | None:
    """For a Message-ID Dovecot cut (`<...`, 80 bytes ending in `...`): the part it kept; else None."""
    size = len(message_id.encode("utf-8", "surrogateescape"))
    # 80 bytes, fewer when the cut fell inside a UTF-8 character, one more for the `<` ingest adds
    if message_id.endswith("...") and _LOGGED_BYTES - 3 <= size <= _LOGGED_BYTES + 1:
        return message_id[:-3]
    return None
