"""What the tracking center's processes share through the store (store/web_state.py), on both backends.

Two handles of one store stand for two web worker processes (or two web nodes of one PostgreSQL
store): a key, a counter or a login lock written through one is what the other reads.
"""

from __future__ import annotations

import pytest

from mailwarden.loginguard import Lock, LoginGuard
from mailwarden.store.web_state import StoredGuardState
from tests.support.clock import FakeClock
from tests.support.stores import Opener

pytestmark = pytest.mark.integration


def test_a_web_secret_is_made_once_and_read_alike_through_every_handle(open_node: Opener) -> None:
    first, second = open_node(), open_node()
    key = first.web_secret("web.login_form")
    assert len(key) == 32
    assert second.web_secret("web.login_form") == key
    assert second.web_secret("another") != key


def test_a_counter_counts_the_hits_of_every_handle_per_key_and_minute(open_node: Opener) -> None:
    first, second = open_node(), open_node()
    clock = FakeClock()
    assert first.count_hit("web.why", "192.0.2.1", clock()) == 1
    assert second.count_hit("web.why", "192.0.2.1", clock() + 1) == 2
    assert second.count_hit("web.why", "192.0.2.2", clock() + 1) == 1
    assert first.count_hit("web.other", "192.0.2.1", clock() + 1) == 1
    # Half a minute into the next minute, the previous minute's two hits weigh half: 1 + 1 = 2.
    assert first.count_hit("web.why", "192.0.2.1", clock() + 90) == 2
    assert second.count_hit("web.why", "192.0.2.1", clock() + 300) == 1  # long gone


def test_login_failures_through_two_handles_lock_for_both_until_the_lock_ends(open_node: Opener) -> None:
    clock = FakeClock()

    def guard(store: object) -> LoginGuard:
        return LoginGuard(
            base_delay=1.0,
            max_delay=8.0,
            max_failures=3,
            lock_seconds=600.0,
            clock=clock,
            state=StoredGuardState(store),  # type: ignore[arg-type]
        )

    first, second = guard(open_node()), guard(open_node())
    assert first.failed("192.0.2.1", "alice") == (1, 1.0)
    assert second.failed("192.0.2.2", "alice") == (2, 2.0)
    second.succeeded("alice")  # a correct login forgets the user's failures, not the addresses'
    assert first.failed("192.0.2.1", "alice") == (2, 2.0)
    assert second.failed("192.0.2.1", "bob") == (3, 4.0)  # the address's third: locked
    assert first.locked("192.0.2.1", "carol") == Lock("address", 600.0)
    assert first.locked("192.0.2.9", "carol") is None
    clock.advance(601)
    assert second.locked("192.0.2.1", "carol") is None
    assert first.failed("192.0.2.1", "carol") == (1, 1.0)  # the old failures are out of the window
