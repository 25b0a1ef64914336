"""Message keys and the links between them (design.md: "A message's identity is decided by the writer, once").

Every event of a message carries the message's key, stamped by whoever wrote the event:

* our gateway: the transaction's ref; our POP3 server: the ref of the delivery it reads;
* a foreign MTA's log (ingest): one key per life of a queue file (`Q…`: node, queue id, the time
  the life began), one per transaction of a session that never got a queue id (`S…`), one per Exim
  message (`X…`), and one per refusal logged without either (`E…`: node and the line itself);
* a mailbox server's log (Dovecot): one key per LMTP/LDA delivery (`L…`: node and LMTP session;
  `D…` for LDA, which has none) and one per stored copy (`C…`: node, user, folder, uid), which the
  copy's later retrievals and deletions carry.

Ingested keys are 16 characters: the letter of the kind and 75 bits of a BLAKE2b hash of what
identifies the message, in Crockford's base32 (refs are 12 characters of the same alphabet). The
same log gives the same keys in every run and on every machine, and a key names one message:
a reused queue id starts a new life, a Message-ID is never part of a key.

Connection events (connect, HELO, disconnect, logins and logouts, checks of the client) carry no
key: they belong to the connection, which the message's events name by (node, session).

A hop from one key to the next (our proxy's or Postfix's LMTP delivery to Dovecot, a queue file
re-injected after a content filter, a stored copy) is a *link*: the upstream key hands the message
on to a handle, the downstream key arrived as it. A handle is either what both sides log
(`lmtp:SESSION`) or the downstream key itself when the writer knows it. Either side may be written
first, in any run: the join is exact on the handle. A message is the *root* of its linked keys
(the key with nothing upstream); the trace follows the links from it, the index keeps its rows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final, NamedTuple

from mailwarden.events import Event
from mailwarden.handoff import lmtp_session
from mailwarden.refs import ALPHABET

# Kinds that belong to a connection or a mailbox login rather than to one message.
CONNECTION_KINDS: Final = frozenset({"connect", "helo", "disconnect", "login", "logout"})
ACCESS_KINDS: Final = frozenset({"retrieve", "delete"})
# Kinds a line of a foreign log can make a message of on its own (a refusal, a delivery ...);
# checks, logins and unknown lines without a session or queue file belong to no message.
MESSAGE_KINDS: Final = frozenset(
    {"mail", "rcpt", "data", "reject", "tempfail", "greylist", "accept", "deliver", "defer", "bounce", "scan"}
)
# Mailbox servers whose ingested logs continue a message an MTA handed to them (on any node).
MAILBOX_SERVERS: Final = frozenset({"dovecot"})
# Dovecot's mail_log: copies/saves into folders and the IMAP \\Deleted flag do not change a fate.
MAILBOX_ACTIONS: Final = frozenset({"copy", "save", "flag", "unflag"})
# A mailbox server's delivery kinds: stored (or not) what it was handed.
_DELIVERY_KINDS: Final = frozenset({"deliver", "defer", "reject", "delete"})
# Foreign logs have whole seconds and other nodes' clocks differ: "not after" and "at once" allow this.
CLOCK_SLACK_US: Final = 60_000_000
_HASH_BITS: Final = 75  # 15 base32 characters after the kind's letter


def derived_key(kind: str, *parts: str) -> str:
    """A 16-character key of `kind` (one letter) for the message the `parts` identify."""
    data = "\x00".join(parts).encode("utf-8", "surrogateescape")
    value = int.from_bytes(hashlib.blake2b(data, digest_size=10, person=b"mw-message-key").digest(), "big")
    value >>= 80 - _HASH_BITS
    chars = []
    for _ in range(_HASH_BITS // 5):
        chars.append(ALPHABET[value & 31])
        value >>= 5
    return kind + "".join(reversed(chars))


def queue_life_key(node: str, queue_id: str, began_us: int) -> str:
    """One life of a foreign MTA's queue file: a reused queue id begins another."""
    return derived_key("Q", node, queue_id, str(began_us))


def session_transaction_key(node: str, session: str, number: int) -> str:
    """The `number`th transaction of an MTA session that got no queue id (refused before DATA)."""
    return derived_key("S", node, session, str(number))


def line_key(node: str, line: str) -> str:
    """A refusal or delivery logged on its own line, with no session or queue file to join it."""
    return derived_key("E", node, line)


def copy_key(node: str, user: str, folder: str, uid: int | str) -> str:
    """A copy a mailbox server stored: its user, folder and uid (what its accesses name)."""
    return derived_key("C", node, user.lower(), folder, str(uid))


def mailbox_server_key(event: Event) -> str | None:
    """The key of a mailbox server's (Dovecot's) event, from the event alone.

    A delivery is keyed by its LMTP session (LDA has none: by the line's time, user and
    Message-ID); a stored copy and its later accesses by the copy (user, folder, uid), so an access
    joins exactly the delivery that stored what it reads; an access that names no uid by itself.
    Logins, logouts and other connection events have none.
    """
    kind = event.kind
    if kind in CONNECTION_KINDS or kind == "unknown":
        return None
    copy = stored_copy(event)
    if kind == "deliver" and event.detail.get("action") in MAILBOX_ACTIONS:
        if copy is not None:
            return copy_key(event.node, *copy)
    elif mailbox_delivery(event):
        if event.session:
            return derived_key("L", event.node, event.session)
        return derived_key("D", event.node, str(event.ts), event.recipient or "", event.message_id or "")
    elif kind in ACCESS_KINDS and copy is not None:
        return copy_key(event.node, *copy)
    return derived_key(
        "A", event.node, event.session or "", str(event.ts), event.recipient or "", event.message_id or "", kind
    )


def mailbox_delivery(event: Event) -> bool:
    """A mailbox server's event about storing what it was handed (LMTP/LDA, Sieve), not a client's doing."""
    if event.source not in MAILBOX_SERVERS or event.kind not in _DELIVERY_KINDS:
        return False
    action = event.detail.get("action")
    return action == "discard" if event.kind == "delete" else action not in MAILBOX_ACTIONS


def stored_copy(event: Event) -> tuple[str, str, int] | None:
    """(user, folder, uid) of the copy a mailbox server stored or accessed, when the event says."""
    uid = event.detail.get("uid")
    if event.source not in MAILBOX_SERVERS or not event.recipient or not isinstance(uid, int):
        return None
    folder = event.detail.get("box") if event.kind in ACCESS_KINDS else event.detail.get("folder")
    return event.recipient, str(folder or "INBOX"), uid


def handoff_session(event: Event) -> str | None:
    """The mailbox server's LMTP session an MTA's delivery names (recorded, or in Dovecot's reply)."""
    if event.kind != "deliver" or event.source in MAILBOX_SERVERS:
        return None
    recorded = event.detail.get("downstream_session")
    if isinstance(recorded, str):
        return recorded
    reply = event.detail.get("downstream_reply")
    if isinstance(reply, str):
        return lmtp_session(reply)
    return lmtp_session(event.reply) if event.reply and "Saved" in event.reply else None


class Link(NamedTuple):
    """One side of a hop: `message_key` handed the message on to `handle` (`upstream`) or arrived as it.

    `recipient` is the recipient the upstream side handed on; `hint` marks a link its writer made
    from a Message-ID (a copy no delivery names exactly), which an exact link replaces.
    """

    handle: str
    message_key: str
    upstream: bool
    recipient: str | None = None
    hint: bool = False


def links_of(event: Event) -> list[Link]:
    """The links an event records, from its own fields (so a store rebuilds them from its events)."""
    key = event.message_key
    if key is None:
        return []
    found: list[Link] = []
    if event.source in MAILBOX_SERVERS:
        if event.session and mailbox_delivery(event) and event.detail.get("protocol") != "lda":
            found.append(Link(f"lmtp:{event.session}", key, False))
        if event.kind == "deliver":
            copy = stored_copy(event)
            if copy is not None:
                found.extend(hop(key, copy_key(event.node, *copy), event.recipient))
    else:
        session = handoff_session(event)
        if session is not None:
            found.append(Link(f"lmtp:{session}", key, True, event.recipient))
    following = event.detail.get("next_key")  # a re-injected queue file that continues this one
    if isinstance(following, str):
        found.extend(hop(key, following, event.recipient))
    preceding = event.detail.get("prev_key")  # the queue file this one continues
    if isinstance(preceding, str):
        found.extend(hop(preceding, key, None))
    return found


class QueueFile(NamedTuple):
    """A queue file a message lived in (a re-injection makes a second), and when it was last seen there."""

    queue_id: str
    node: str
    message_key: str
    last_us: int


def queue_files(events: Iterable[Event]) -> list[QueueFile]:
    """The queue files these events name, so that any hop's queue id finds its message (both stores).

    A mailbox server's queue id is its own (Dovecot's), not a queue file. Sorted: two nodes writing
    the same rows to PostgreSQL at once take their locks in the same order."""
    seen: dict[tuple[str, str, str], int] = {}
    for event in events:
        key = event.message_key
        if key is not None and event.queue_id and event.source not in MAILBOX_SERVERS:
            slot = (event.queue_id, event.node, key)
            seen[slot] = max(seen.get(slot, 0), event.ts)
    return [QueueFile(*slot, last_us) for slot, last_us in sorted(seen.items())]


def hop(upstream: str, downstream: str, recipient: str | None, *, hint: bool = False) -> list[Link]:
    """A link whose handle is the downstream key itself."""
    if upstream == downstream:
        return []
    return [Link(downstream, upstream, True, recipient, hint), Link(downstream, downstream, False, None, hint)]


Edges = dict[str, list[tuple[str, bool]]]  # key -> its upstream keys, each with whether it is a hint


def upstream_edges(links: Iterable[Link]) -> Edges:
    """Each key's upstream keys. A key with an exact upstream ignores its Message-ID hints."""
    handed: dict[str, list[Link]] = {}
    arrived: list[Link] = []
    for link in links:
        if link.upstream:
            handed.setdefault(link.handle, []).append(link)
        else:
            arrived.append(link)
    edges: Edges = {}
    for link in arrived:
        for up in handed.get(link.handle, ()):
            if up.message_key != link.message_key:
                pairs = edges.setdefault(link.message_key, [])
                pair = (up.message_key, up.hint or link.hint)
                if pair not in pairs:
                    pairs.append(pair)
    for key, pairs in edges.items():
        if any(not hint for _, hint in pairs):
            edges[key] = [pair for pair in pairs if not pair[1]]
    return edges


def root_of(key: str, edges: Edges) -> str:
    """The message a key belongs to: up its links to the key with nothing upstream."""
    seen = [key]
    while True:
        ups = edges.get(key)
        if not ups:
            return key
        key = min(up for up, _ in ups)  # two upstreams (should not happen): the same choice every time
        if key in seen:  # a cycle (should not happen either): the same choice every time
            return min(seen)
        seen.append(key)


@dataclass
class Component:
    """A message: its root key and every key linked to it."""

    root: str
    keys: set[str]


def component(key: str, load_links: Callable[[Sequence[str]], Iterable[Link]]) -> Component:
    """The linked keys around `key` and their root, reading the links of each key once."""
    return components([key], load_links)[key]


def components(keys: Iterable[str], load_links: Callable[[Sequence[str]], Iterable[Link]]) -> dict[str, Component]:
    """The message of each of `keys`: the keys linked to it and their root (all read together,
    a round of link reads per hop rather than per key)."""
    links: set[Link] = set()
    known = set(keys)
    wanted = sorted(known)
    frontier = wanted
    edges: Edges = {}  # of every link read (the last round reads nothing new: no second pass over them)
    while frontier:
        links.update(load_links(frontier))
        edges = upstream_edges(links)
        linked = set(known)
        for down, ups in edges.items():
            if down in known or any(up in known for up, _ in ups):
                linked.add(down)
                linked.update(up for up, _ in ups)
        frontier = sorted(linked - known)
        known = linked
    roots = {each: root_of(each, edges) for each in known}
    members: dict[str, set[str]] = {}
    for each, root in roots.items():
        members.setdefault(root, set()).add(each)
    found = {root: Component(root, keys) for root, keys in members.items()}
    return {key: found[roots[key]] for key in wanted}
