"""A search page reads its messages' events only around the span its index rows name (a store
partitioned by day then reads those days, not all of them), and still shows each message whole:
its connection opened long before it, and a mailbox access weeks later.
"""

from __future__ import annotations

from typing import Any, cast

from mailwarden.store import EventQuery, Store
from mailwarden.trace.correlate import SPAN_MARGIN_US
from mailwarden.trace.search import AddressFilter, SearchSpec, search
from tests.unit.test_trace_diagnosis import HOUR, T0, Session, pop3

DAY = 24 * HOUR


class RecordingStore:
    """The store, with every event query it is asked kept (to see what a search reads)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.queries: list[EventQuery] = []

    def query_events(self, query: EventQuery) -> Any:
        self.queries.append(query)
        return self.store.query_events(query)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def delivered_after_a_long_connection_and_fetched_weeks_later(store: Store) -> None:
    store.add_mailbox("ann@a.test", "x")
    session = Session(store, "1AAAAAAAAAS1", T0)
    session.at += 3 * HOUR  # the client sent other mail first: its connection began three hours before this one
    session.mail("bob@sender.test")
    session.rcpt("ann@a.test")
    session.deliver(["ann@a.test"])
    session.close()
    fetched = T0 + 20 * DAY
    pop3(store, "retrieve", "1AAAAAAAAAS1", "ann@a.test", fetched, "203.0.113.9", "P1")
    pop3(store, "delete", "1AAAAAAAAAS1", "ann@a.test", fetched + 1000, "203.0.113.9", "P1")
    store.flush()


def test_a_search_page_shows_the_connection_before_and_the_deletion_weeks_after_its_messages(
    store: Store,
) -> None:
    delivered_after_a_long_connection_and_fetched_weeks_later(store)
    spec = SearchSpec(recipient=AddressFilter.parse("ann@a.test"), since_us=T0, until_us=T0 + DAY)
    (message,) = search(store, spec, retention_days=3650, now=T0).messages
    kinds = [event.kind for event in message.events]
    assert kinds[:2] == ["connect", "helo"]
    assert "disconnect" in kinds
    assert kinds[-2:] == ["retrieve", "delete"]


def test_a_search_page_reads_events_only_within_its_messages_span(store: Store) -> None:
    delivered_after_a_long_connection_and_fetched_weeks_later(store)
    recording = RecordingStore(store)
    spec = SearchSpec(recipient=AddressFilter.parse("ann@a.test"), since_us=T0, until_us=T0 + DAY)
    search(cast(Store, recording), spec, retention_days=3650, now=T0)
    reads = [query for query in recording.queries if query.message_keys or query.sessions]
    assert reads, "the page read no events by message or connection"
    first_own, last_own = T0 + 3 * HOUR, T0 + 20 * DAY + 1000  # the message's first own event (MAIL) and the DELE
    for query in reads:
        assert query.since_us is not None and query.until_us is not None
        assert first_own - SPAN_MARGIN_US - 1000 <= query.since_us <= first_own
        assert last_own < query.until_us <= last_own + SPAN_MARGIN_US + 1
