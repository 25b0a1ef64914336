"""Per-client counts shared by the SMTP workers (smtp/clients.py): two workers' views of one shared table.

The connection limits and rate limits must hold for all workers together, and a worker's counts
must give exactly what one process counting everything would (for rates: the `SlidingCounter` of
store/rates.py that a single process's store counts with).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailwarden.smtp.clients import Kind, SharedCounts, clear_slot, create_table
from mailwarden.store import open_store_url
from mailwarden.store.rates import SlidingCounter

CLIENTS = ["192.0.2.7", "198.51.100.1", "2001:db8::1"]


@pytest.fixture
def workers() -> Iterator[tuple[int, SharedCounts, SharedCounts]]:
    """The table's descriptor and the counts of two workers (slots 1 and 2) on it."""
    fd = create_table(workers=2)
    first, second = SharedCounts(fd, slot=1), SharedCounts(fd, slot=2)
    try:
        yield fd, first, second
    finally:
        first.close()
        second.close()
        os.close(fd)


def test_connections_from_one_client_count_across_workers(workers: tuple[int, SharedCounts, SharedCounts]) -> None:
    _, first, second = workers
    assert first.opened("192.0.2.7") == (1, 1)
    assert second.opened("192.0.2.7") == (2, 2)
    assert second.opened("198.51.100.1") == (1, 3)
    assert first.opened("192.0.2.7") == (3, 4)
    second.closed("192.0.2.7")
    assert first.opened("192.0.2.7") == (3, 4)


def test_two_workers_sqlite_stores_count_one_rate_limit_in_the_shared_table(
    tmp_path: Path, workers: tuple[int, SharedCounts, SharedCounts]
) -> None:
    """What an SMTP worker's store is opened with (`open_store_url(local_rates=...)`): the rate-limit
    check asks its store, and the two workers' stores answer for both workers' events together."""
    _, first, second = workers
    url = f"sqlite:///{tmp_path / 'store.db'}"
    stores = [open_store_url(url, local_rates=first), open_store_url(url, local_rates=second)]
    try:
        now = 1_800_000_000.0
        counts = [asyncio.run(stores[n % 2].rate_hit("messages", "192.0.2.7", now + n)) for n in range(4)]
        assert counts == [1, 2, 3, 4]
        with pytest.raises(ValueError, match="counts connections, messages"):
            asyncio.run(stores[0].rate_hit("logins", "192.0.2.7", now))
    finally:
        for store in stores:
            store.close()


def test_a_worker_that_ended_is_forgotten_with_its_connections(workers: tuple[int, SharedCounts, SharedCounts]) -> None:
    fd, first, second = workers
    for _ in range(5):
        second.opened("192.0.2.7")
    clear_slot(fd, 2)  # the supervisor, before it starts the worker's successor
    assert first.opened("192.0.2.7") == (1, 1)


events = st.lists(
    st.tuples(
        st.sampled_from([0, 1]),  # which worker
        st.sampled_from(["connections", "messages"]),
        st.sampled_from(CLIENTS),
        st.floats(min_value=0, max_value=30, allow_nan=False),  # seconds after the previous event
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(events)
def test_rates_summed_over_workers_are_those_of_one_process_counting_everything(
    sequence: list[tuple[int, Kind, str, float]],
) -> None:
    fd = create_table(workers=2)
    workers = [SharedCounts(fd, slot=1), SharedCounts(fd, slot=2)]
    alone = {"connections": SlidingCounter(), "messages": SlidingCounter()}
    now = 1_800_000_000.0
    try:
        for worker, kind, client, pause in sequence:
            now += pause
            assert workers[worker].hit(kind, client, now) == alone[kind].hit(client, now)
    finally:
        for counts in workers:
            counts.close()
        os.close(fd)
