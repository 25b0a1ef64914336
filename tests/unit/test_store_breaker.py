"""The PostgreSQL store's circuit breaker (store/breaker.py): once the database was found away, one
thread probes until it answers, however many sessions found it away meanwhile. The store's use
of it, against a stopped PostgreSQL, is in tests/integration/test_nodes_on_postgres.py."""

from __future__ import annotations

import queue
import threading

from mailwarden.store.breaker import CircuitBreaker


def prober(name: str) -> threading.Thread:
    (thread,) = [t for t in threading.enumerate() if t.name == f"probe:{name}"]
    return thread


def test_an_open_breaker_probes_from_one_thread_until_the_database_answers_then_asks_it_again() -> None:
    answers: queue.Queue[bool] = queue.Queue()
    probed_by: list[str] = []

    def probe() -> bool:
        probed_by.append(threading.current_thread().name)
        return answers.get(timeout=30)

    breaker = CircuitBreaker(probe, 0, "db")
    assert breaker.away is None
    for session in range(5):  # every session that finds it away says so; one thread probes
        breaker.lost(f"refused {session}")
    assert breaker.away == "refused 4"
    thread = prober("db")
    answers.put(False)  # still away
    answers.put(True)
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert breaker.away is None
    assert probed_by == ["probe:db", "probe:db"]

    breaker.lost("refused again")  # away once more: probed again
    thread = prober("db")
    answers.put(True)
    thread.join(timeout=30)
    assert breaker.away is None and len(probed_by) == 3


def test_a_write_that_reached_the_database_closes_the_breaker_without_a_probe() -> None:
    breaker = CircuitBreaker(lambda: False, 3600, "db")
    breaker.lost("connection refused")
    breaker.reached()
    assert breaker.away is None
    breaker.close()
    prober("db").join(timeout=30)  # closing ends the prober at once, not after its interval
