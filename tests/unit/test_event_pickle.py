"""Events cross process boundaries pickled (SMTP workers -> the supervisor's writer, the bulk
import's writer process): what arrives must be the same event, every field in its place."""

from __future__ import annotations

import dataclasses
import pickle

from mailwarden.events import Event, field_values


def _every_field_set() -> Event:
    return Event(
        kind="deliver",
        source="gateway",
        node="mx1",
        ts=1_700_000_000_123_456,
        session="S1",
        ref="1C3Z0000000A",
        queue_id="4bKx1",
        message_id="<m@example.test>",
        client_ip="127.0.0.5",
        client_name="client.example.test",
        helo="client.example.test",
        sender="alice@sender.test",
        recipient="bob@example.test",
        smtp_code=250,
        enhanced_code="2.0.0",
        reply="250 2.0.0 OK",
        reason="accepted",
        detail={"mailbox": "bob@example.test", "uid": "17", "nested": {"tls": "TLSv1.3"}},
        size=10_240,
        evidence="some evidence",
        message_key="k1",
        id=42,
    )


def test_a_pickled_event_arrives_with_every_field_in_its_place() -> None:
    event = _every_field_set()
    arrived = pickle.loads(pickle.dumps(event, protocol=pickle.HIGHEST_PROTOCOL))
    assert arrived == event
    assert arrived.id == 42  # `==` of a dataclass compares every field; the id is one of them
    assert [getattr(arrived, f.name) for f in dataclasses.fields(Event)] == list(field_values(event))


def test_field_values_rebuild_the_event() -> None:
    event = _every_field_set()
    assert Event(*field_values(event)) == event
