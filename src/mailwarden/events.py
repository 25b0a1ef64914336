"""The event model: one row per observation, the schema every part of mailwarden speaks.

Field names are a contract (design.md, "Event model"): add fields, never rename them.
The gateway, the POP3 server and the log parsers all produce `Event`s; the store keeps
them; the trace reads them back.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from operator import attrgetter
from typing import Any, Final

# The kinds design.md lists, plus `check` (one check's result, when recorded on its own),
# `unknown` (a foreign log line no parser understood) and `greylist` (a greylisting decision).
KINDS: Final = frozenset(
    {
        "connect",
        "helo",
        "mail",
        "rcpt",
        "data",
        "reject",
        "tempfail",
        "accept",
        "deliver",
        "defer",
        "bounce",
        "login",
        "retrieve",
        "delete",
        "logout",
        "scan",
        "disconnect",
        "check",
        "unknown",
        "greylist",
    }
)

FIELDS: Final = (
    "ts",
    "node",
    "source",
    "kind",
    "session",
    "ref",
    "queue_id",
    "message_id",
    "client_ip",
    "client_name",
    "helo",
    "sender",
    "recipient",
    "smtp_code",
    "enhanced_code",
    "reply",
    "reason",
    "detail",
    "size",
    "evidence",
    "message_key",
)


def _detail_json() -> Callable[[dict[str, Any]], str]:
    """`json.dumps(detail, separators=(",", ":"), ensure_ascii=False)` for every event the store
    writes, its C encoder made once: `json.dumps` and `JSONEncoder.encode` make one per call, a
    third of the cost of a detail of a few keys (measured: 1.8 against 2.7 us). No check for
    circular references: a detail is built from parsed values and never holds itself."""
    encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
    if c_make_encoder is None:  # an interpreter without the C accelerator
        return encoder.encode
    chunks = c_make_encoder(
        None, encoder.default, encode_basestring, None, ":", ",", False, False, True
    )  # markers, default, encoder, indent, key and item separators, sort_keys, skipkeys, allow_nan
    return lambda detail: "".join(chunks(detail, 0))


_DETAIL_JSON: Final = _detail_json()


def now_us() -> int:
    """The current time as integer microseconds since the epoch (UTC), the store's time unit."""
    return time.time_ns() // 1000


def us_to_datetime(ts_us: int) -> datetime:
    return datetime.fromtimestamp(ts_us / 1_000_000, tz=UTC)


def us_to_iso(ts_us: int) -> str:
    """ISO 8601 with microseconds and an explicit UTC offset, as the JSON contracts use."""
    return us_to_datetime(ts_us).isoformat(timespec="microseconds")


@dataclass(slots=True)
class Event:
    """One observation. `ts` is UTC in microseconds since the epoch; `detail` is free-form JSON."""

    kind: str
    source: str
    node: str
    ts: int = field(default_factory=now_us)
    session: str | None = None
    ref: str | None = None
    queue_id: str | None = None
    message_id: str | None = None
    client_ip: str | None = None
    client_name: str | None = None
    helo: str | None = None
    sender: str | None = None
    recipient: str | None = None
    smtp_code: int | None = None
    enhanced_code: str | None = None
    reply: str | None = None
    reason: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    size: int | None = None
    evidence: str | None = None
    message_key: str | None = None  # the message it belongs to, decided by its writer (design.md)
    id: int | None = None  # assigned by the store

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown event kind {self.kind!r}; known kinds: {sorted(KINDS)}")

    def __reduce__(self) -> tuple[type[Event], tuple[Any, ...]]:
        """Pickled as its class and field values, in order (the SMTP workers' events cross to the
        supervisor's writer pickled): a slotted dataclass is otherwise pickled and unpickled field
        by field through Python code, which cost more than twice the CPU on both sides (measured:
        8 events 24 -> 10 us to dump, 22 -> 8 us to load)."""
        return (Event, field_values(self))

    def to_row(self) -> tuple[Any, ...]:
        """The values in `FIELDS` order, with `detail` serialized, ready for the store."""
        return (
            self.ts,
            self.node,
            self.source,
            self.kind,
            self.session,
            self.ref,
            self.queue_id,
            self.message_id,
            self.client_ip,
            self.client_name,
            self.helo,
            self.sender,
            self.recipient,
            self.smtp_code,
            self.enhanced_code,
            self.reply,
            self.reason,
            _DETAIL_JSON(self.detail) if self.detail else None,
            self.size,
            self.evidence,
            self.message_key,
        )

    @classmethod
    def from_row(cls, row: tuple[Any, ...], event_id: int | None = None) -> Event:
        values = dict(zip(FIELDS, row, strict=True))
        detail = values.pop("detail")
        return cls(**values, detail=json.loads(detail) if detail else {}, id=event_id)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: every field, `ts` as ISO 8601 UTC, `detail` as an object."""
        out = {name: getattr(self, name) for name in FIELDS}
        out["ts"] = us_to_iso(self.ts)
        out["id"] = self.id
        return out

    def replace(self, **changes: Any) -> Event:
        return dataclasses.replace(self, **changes)


field_values: Final[Callable[[Event], tuple[Any, ...]]] = attrgetter(*(f.name for f in dataclasses.fields(Event)))
"""An event's field values in the order of `Event(*values)` (id last): what it is pickled as."""
