"""Label bounding of the metrics (metrics.py), the event writer's state and the health verdict (exporter.py).

The counts over real SMTP and POP3, summed across workers, are in tests/integration/test_metrics.py.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from mailwarden import metrics
from mailwarden.catalog import CATALOG
from mailwarden.config import Config
from mailwarden.events import Event
from mailwarden.exporter import Node, application
from mailwarden.store.base import BatchWriter, StoreError, WriterState


def counted(metric: Any, **labels: str) -> float:
    """The current value of one labelled series (0 when it was never counted)."""
    for family in metric.collect():
        for sample in family.samples:
            if sample.name.endswith(("_total", "_count")) and sample.labels == labels:
                return float(sample.value)
    return 0.0


@given(st.text(max_size=80))
def test_a_label_value_is_a_known_code_or_other_whatever_a_stranger_sends(text: str) -> None:
    assert metrics.bounded(text, CATALOG) in {*CATALOG, metrics.OTHER}


def test_a_reason_that_is_no_catalog_code_is_counted_as_other_and_a_known_one_as_itself() -> None:
    decisions = metrics.instruments().decisions
    forged = counted(decisions, outcome="rejected", reason="other")
    unknown_user = counted(decisions, outcome="rejected", reason="rcpt.unknown_user")
    metrics.count_decision("reject", "rcpt.unknown_user")
    metrics.count_decision("reject", "client.dnsbl\r\nmailwarden_pwned 1")
    metrics.count_decision("reject", None)
    assert counted(decisions, outcome="rejected", reason="rcpt.unknown_user") == unknown_user + 1
    assert counted(decisions, outcome="rejected", reason="other") == forged + 2


def test_outcomes_scanners_and_pop3_logins_have_fixed_label_sets() -> None:
    instruments = metrics.instruments()
    odd = counted(instruments.decisions, outcome="other", reason="delivered")
    metrics.count_decision("deliver", "delivered")  # not a decision kind
    assert counted(instruments.decisions, outcome="other", reason="delivered") == odd + 1
    scanners = counted(instruments.scanner_seconds, scanner="other")
    metrics.observe_scanner("clamd; rm -rf", 0.01)
    assert counted(instruments.scanner_seconds, scanner="other") == scanners + 1
    ok, failed = counted(instruments.pop3_logins, outcome="ok"), counted(instruments.pop3_logins, outcome="other")
    metrics.count_pop3_login(None)
    metrics.count_pop3_login("USER bob\r\n")
    assert counted(instruments.pop3_logins, outcome="ok") == ok + 1
    assert counted(instruments.pop3_logins, outcome="other") == failed + 1


def _commit(writer: BatchWriter, events: list[Event]) -> StoreError | None:
    """Commit through the writer's thread and wait for its answer."""
    answered = threading.Event()
    errors: list[StoreError | None] = []

    def done(error: StoreError | None) -> None:
        errors.append(error)
        answered.set()

    writer.put_many(events)
    writer.commit_soon((), done)
    answered.wait(30)
    return errors[0]


def test_the_writer_reports_its_failing_write_and_the_kept_events_until_a_write_succeeds() -> None:
    failing = [True]

    def write_batch(events: list[Event], positions: list[Any]) -> None:
        if failing[0]:
            raise OSError("No space left on device")

    writer = BatchWriter(write_batch, 0.001, "test-writer")
    try:
        assert writer.state() == WriterState.idle()
        events = [Event(kind=kind, source="gateway", node="mx") for kind in ("connect", "disconnect")]
        assert _commit(writer, events) is not None
        state = writer.state()
        assert state.error == "No space left on device"
        assert state.queued >= 2 and state.oldest_seconds > 0
        failing[0] = False
        assert _commit(writer, []) is None  # the kept events are written with the next batch
        assert writer.state() == WriterState.idle()
    finally:
        writer.close()


class _Store:
    def __init__(self, state: WriterState) -> None:
        self.state = state
        self.nudged = 0

    def writer_state(self) -> WriterState:
        return self.state

    def commit_soon(self, events: Any, done: Any) -> None:
        self.nudged += 1


def test_health_names_why_the_node_cannot_take_mail_with_evidence() -> None:
    config = Config(metrics={"stuck_after": 30.0})  # type: ignore[arg-type]
    store = _Store(WriterState.idle())
    workers = [2]
    node = Node(config, store, smtp_workers=lambda: workers[0])  # type: ignore[arg-type]
    assert node.health() is None
    store.state = WriterState(3, 31.0, None)
    assert node.health() == "event writer stuck: the oldest uncommitted event has waited 31 s"
    store.state = WriterState(3, 31.0, "the event spool /x cannot be written (Read-only file system)")
    assert node.health() == "events cannot be committed: the event spool /x cannot be written (Read-only file system)"
    assert store.nudged == 1  # the writer is asked to try again, so the next answer is current
    store.state, workers[0] = WriterState.idle(), 0
    assert node.health() == "no SMTP worker is running"


def test_the_listener_serves_health_as_one_plain_line_and_nothing_but_its_two_paths(tmp_path: Path) -> None:
    store = _Store(WriterState(1, 0.1, "x" * 500))
    app = application(Node(Config(), store), tmp_path)  # type: ignore[arg-type]
    answers: list[str] = []

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        answers.append(status)

    body = b"".join(app({"PATH_INFO": "/health", "REQUEST_METHOD": "GET"}, start_response))
    assert answers[-1] == "503 Service Unavailable"
    assert body == b"events cannot be committed: " + b"x" * 172 + b"\n"
    assert b"".join(app({"PATH_INFO": "/../etc/passwd", "REQUEST_METHOD": "GET"}, start_response)).startswith(
        b"not found"
    )
    assert answers[-1] == "404 Not Found"
    scraped = b"".join(app({"PATH_INFO": "/metrics", "REQUEST_METHOD": "GET"}, start_response)).decode()
    assert answers[-1].startswith("200") and "mailwarden_event_writer_failing 1.0" in scraped
