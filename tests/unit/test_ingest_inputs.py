"""Reading logs: rotated archives in order, resuming without duplicates, following across rotation."""

from __future__ import annotations

import asyncio
import gzip
import io
import os
import signal
import socket
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from mailwarden.events import Event
from mailwarden.ingest.inputs import Follower, Importer, Positions
from mailwarden.ingest.pipeline import Ingester, Stats
from mailwarden.ingest.progress import import_progress, summary
from mailwarden.ingest.receiver import SyslogReceiver, to_line
from mailwarden.ingest.service import IngestService
from mailwarden.ingest.sources import rotation_order
from mailwarden.store import EventQuery, Position, Store, StoreError
from mailwarden.store.sqlite import SqliteStore
from tests.support.net import free_port


def _login(n: int, host: str = "mx") -> str:
    return (
        f"Nov 28 04:{n // 60 % 60:02d}:{n % 60:02d} {host} dovecot: pop3-login: Login: user=<u{n}@x.test>, "
        f"method=PLAIN, rip=192.0.2.{n % 250 + 1}, lip=127.0.0.1, mpid={n}, session=<S{n}>\n"
    )


def _users(store: Store) -> list[str]:
    store.flush()
    return [str(e.recipient) for e in store.query_events(EventQuery(kinds=("login",)))]


def _import(store: Store, paths: list[Path], **options: bool) -> Ingester:
    ingester = Ingester(store.append, default_node="t", holdback_s=0)
    Importer(store, ingester, warmup_bytes=1 << 20, **options).run([str(p) for p in paths])
    store.flush()
    return ingester


def test_rotated_series_are_read_oldest_first() -> None:
    names = [
        "mail.log",
        "mail.log.1",
        "mail.log.3.gz",
        "mail.log.2.gz",
        "dovecot.log-20240102.gz",
        "dovecot.log",
        "dovecot.log-20240101",
    ]
    assert rotation_order(names) == [
        "dovecot.log-20240101",
        "dovecot.log-20240102.gz",
        "dovecot.log",
        "mail.log.3.gz",
        "mail.log.2.gz",
        "mail.log.1",
        "mail.log",
    ]


def test_gzip_and_plain_archives_import_once_and_continue_where_they_stopped(store: Store, tmp_path: Path) -> None:
    old = tmp_path / "mail.log.2.gz"
    old.write_bytes(gzip.compress("".join(_login(n) for n in range(0, 5)).encode()))
    current = tmp_path / "mail.log"
    current.write_text("".join(_login(n) for n in range(5, 10)))
    _import(store, [current, old])
    assert _users(store) == [f"u{n}@x.test" for n in range(10)]
    again = _import(store, [current, old])
    assert again.stats.events == 0
    with current.open("a") as handle:
        handle.write(_login(10) + _login(11))
    _import(store, [current, old])
    assert _users(store) == [f"u{n}@x.test" for n in range(12)]


class Killed(Exception):
    """The import process dies (kill -9, power cut) after handing some batches to the store."""


def test_an_import_killed_between_bulk_batches_resumes_without_duplicates_or_gaps(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Importer, "CHECK_EVERY_LINES", 4)
    monkeypatch.setattr(Positions, "BULK_EVENTS", 5)
    path = tmp_path / "mail.log"
    path.write_text("".join(_login(n) for n in range(40)))
    handed: list[int] = []
    commit = store.append_bulk

    def dies_at_the_third_batch(events: list[Event], positions: list[Position]) -> None:
        if len(handed) == 2:
            raise Killed
        handed.append(len(events))
        assert positions, "every batch carries the positions behind its events"
        commit(events, positions)

    monkeypatch.setattr(store, "append_bulk", dies_at_the_third_batch)
    with pytest.raises(Killed):
        _import(store, [path])
    stored = _users(store)
    assert len(stored) == sum(handed) and 0 < len(stored) < 40  # only whole batches, with their positions
    monkeypatch.undo()
    _import(store, [path])
    assert _users(store) == [f"u{n}@x.test" for n in range(40)]


def _forty_logins(directory: Path) -> Path:
    path = directory / "mail.log"
    path.write_text("".join(_login(n) for n in range(40)))
    return path


def _restarted_import_stores_every_login_once(store_path: Path, log: Path) -> None:
    restarted = SqliteStore(store_path)
    try:
        _import(restarted, [log])
        assert _users(restarted) == [f"u{n}@x.test" for n in range(40)]
    finally:
        restarted.close()


def test_a_bulk_import_whose_writer_process_is_killed_stops_and_resumes_without_duplicates_or_gaps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite only: its bulk imports are written by a process of their own, which is killed here."""
    monkeypatch.setattr(Importer, "CHECK_EVERY_LINES", 4)
    monkeypatch.setattr(Positions, "BULK_EVENTS", 5)
    path = _forty_logins(tmp_path)
    store = SqliteStore(tmp_path / "store.db")
    handed: list[int] = []
    commit = store.append_bulk

    def writer_killed_after_two_batches(events: list[Event], positions: list[Position]) -> None:
        if len(handed) == 2:
            store.flush()
            assert store._bulk is not None and store._bulk.pid != os.getpid()  # a process of its own
            os.kill(store._bulk.pid, signal.SIGKILL)
        handed.append(len(events))
        commit(events, positions)

    monkeypatch.setattr(store, "append_bulk", writer_killed_after_two_batches)
    with pytest.raises(StoreError, match="bulk writer process ended unexpectedly"):
        _import(store, [path])
    assert len(_users(store)) == sum(handed[:2])  # the batches committed before, with their positions
    monkeypatch.undo()
    store.close()
    _restarted_import_stores_every_login_once(tmp_path / "store.db", path)


class _DiesAtTheSixthPart(SqliteStore):
    """The import process dies (kill -9, power cut) as it hands its writer the sixth part."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.parts: list[int] = []

    def append_bulk_part(self, events: Sequence[Event]) -> bool:
        if len(self.parts) == 5:
            raise Killed
        self.parts.append(len(events))
        return super().append_bulk_part(events)


def test_an_import_killed_while_its_batch_is_in_the_writer_in_parts_resumes_without_duplicates_or_gaps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite's writer process takes a batch's parts as they are read (`Store.append_bulk_part`);
    they are committed with the batch's end and its positions, or not at all."""
    monkeypatch.setattr(Importer, "CHECK_EVERY_LINES", 1)
    monkeypatch.setattr(Positions, "BULK_PART_EVENTS", 2)
    monkeypatch.setattr(Positions, "BULK_EVENTS", 8)
    path = _forty_logins(tmp_path)
    store = _DiesAtTheSixthPart(tmp_path / "store.db")
    with pytest.raises(Killed):
        _import(store, [path])
    store.flush()
    assert store.parts == [2, 2, 2, 2, 2] and len(_users(store)) == 8  # the first batch; the second's parts are not
    store.close()
    _restarted_import_stores_every_login_once(tmp_path / "store.db", path)


def test_a_renamed_and_compressed_file_is_recognised_by_its_content(store: Store, tmp_path: Path) -> None:
    current = tmp_path / "mail.log"
    current.write_text("".join(_login(n) for n in range(3)))
    _import(store, [current])
    rotated = tmp_path / "mail.log.1.gz"
    rotated.write_bytes(gzip.compress(current.read_bytes() + _login(3).encode()))
    current.unlink()
    _import(store, [rotated])
    assert _users(store) == [f"u{n}@x.test" for n in range(4)]


def test_reimport_reads_again_from_the_start(store: Store, tmp_path: Path) -> None:
    current = tmp_path / "mail.log"
    current.write_text(_login(1))
    _import(store, [current])
    _import(store, [current], reimport=True)
    assert _users(store) == ["u1@x.test", "u1@x.test"]


def _follower(store: Store, path: Path) -> tuple[Follower, Ingester, Positions]:
    ingester = Ingester(store.append, default_node="t", holdback_s=0)
    positions = Positions(store, ingester)
    return Follower(path, ingester, positions, warmup_bytes=1 << 20, max_line=65536), ingester, positions


def _stop(follower: Follower, ingester: Ingester, positions: Positions) -> None:
    """What the service does when it stops: release held events, checkpoint, commit."""
    ingester.finish()
    positions.checkpoint(follower.checkpoint_values())
    follower.close()
    assert positions.store is not None
    positions.store.flush()


def test_following_survives_rotation_truncation_and_a_partial_last_line(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "mail.log"
    path.write_text(_login(0) + _login(1))
    follower, ingester, positions = _follower(store, path)
    follower.poll()
    with path.open("a") as handle:
        handle.write(_login(2)[:30])  # the writer is in the middle of a line
    follower.poll()
    with path.open("a") as handle:
        handle.write(_login(2)[30:])
    follower.poll()
    path.rename(tmp_path / "mail.log.1")  # logrotate: rename, then a new file
    with (tmp_path / "mail.log.1").open("a") as handle:
        handle.write(_login(3))  # written to the old file before the daemon reopened its log
    path.write_text(_login(4))
    follower.poll()
    follower.poll()
    path.write_text("")  # copytruncate
    follower.poll()
    path.write_text(_login(5))
    follower.poll()
    _stop(follower, ingester, positions)
    assert _users(store) == [f"u{n}@x.test" for n in range(6)]


def test_a_restarted_follower_resumes_without_duplicates_or_gaps(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "mail.log"
    path.write_text(_login(0) + _login(1))
    first = _follower(store, path)
    first[0].poll()
    _stop(*first)
    with path.open("a") as handle:
        handle.write(_login(2))
    path.rename(tmp_path / "mail.log.1")  # rotated while mailwarden was down
    path.write_text(_login(3))
    second = _follower(store, path)
    second[0].poll()
    _stop(*second)
    assert _users(store) == [f"u{n}@x.test" for n in range(4)]


def test_a_resumed_follower_still_knows_the_sessions_opened_before_the_restart(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "mail.log"
    path.write_text(_login(7))
    first = _follower(store, path)
    first[0].poll()
    _stop(*first)
    with path.open("a") as handle:
        handle.write(
            "Nov 28 04:00:08 mx dovecot: pop3(u7@x.test)<7><S7>: expunge: box=INBOX, uid=1, msgid=<m@x>, size=5\n"
        )
    second = _follower(store, path)
    second[0].poll()
    _stop(*second)
    store.flush()
    (deleted,) = store.query_events(EventQuery(kinds=("delete",)))
    assert deleted.client_ip == "192.0.2.8"


def test_received_syslog_messages_become_log_lines() -> None:
    assert to_line("<22>Nov 28 04:38:56 vm postfix/smtp[2215]: D935121045F: removed\n") == (
        "Nov 28 04:38:56 vm postfix/smtp[2215]: D935121045F: removed"
    )
    assert to_line('<22>1 2026-11-28T04:38:55.718141+00:00 vm postfix 2156 - [x@1 a="b\\]"] starting') == (
        "2026-11-28T04:38:55.718141+00:00 vm postfix[2156]: starting"
    )
    assert to_line("<22>1 2026-11-28T04:38:55Z vm dovecot - - - \ufeffpop3-login: Login") == (
        "2026-11-28T04:38:55Z vm dovecot: pop3-login: Login"
    )


def test_a_line_feed_inside_a_message_cannot_make_a_second_line() -> None:
    line = to_line("<22>Nov 28 04:38:56 vm postfix/smtpd[1]: x\nNov 28 04:38:56 vm postfix/smtp[2]: forged")
    assert "\n" not in line and "#012" in line


def test_the_receiver_takes_udp_and_tcp_in_both_framings() -> None:
    received: list[tuple[str, str]] = []

    async def scenario() -> None:
        receiver = SyslogReceiver(lambda origin, line: received.append((origin, line)))
        port = free_port()
        await receiver.start([("127.0.0.1", port)], ["udp", "tcp"])
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                udp.sendto(b"<22>Nov 28 04:00:00 a postfix/qmgr[1]: udp message", ("127.0.0.1", port))
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            message = b"<22>1 2026-11-28T04:00:00Z b postfix 7 - - octet counted"
            writer.write(str(len(message)).encode() + b" " + message + b"<22>Nov 28 04:00:01 c dovecot: line framed\n")
            await writer.drain()
            writer.close()
            for _ in range(200):
                if len(received) >= 3:
                    break
                await asyncio.sleep(0.02)
        finally:
            await receiver.stop()

    asyncio.run(scenario())
    assert sorted(line for _, line in received) == [
        "2026-11-28T04:00:00Z b postfix[7]: octet counted",
        "Nov 28 04:00:00 a postfix/qmgr[1]: udp message",
        "Nov 28 04:00:01 c dovecot: line framed",
    ]
    assert {origin.split(":")[0] for origin, _ in received} == {"syslog-udp", "syslog-tcp"}


def test_every_event_names_its_file_and_offset(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "mail.log"
    path.write_text(_login(0) + _login(1))
    _import(store, [path])
    events: list[Event] = store.query_events(EventQuery())
    assert [e.evidence for e in events] == [
        f"{path}:0: {_login(0).rstrip()}",
        f"{path}:{len(_login(0))}: {_login(1).rstrip()}",
    ]


def _wait_users(store: Store, count: int) -> list[str]:
    deadline = time.monotonic() + 30
    while len(users := _users(store)) < count and time.monotonic() < deadline:
        time.sleep(0.1)
    return users


def test_the_service_follows_files_and_resumes_after_a_restart(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "mail.log"
    path.write_text(_login(0))

    def service() -> IngestService:
        ingester = Ingester(store.append, default_node="t", holdback_s=0.2)
        return IngestService(ingester, store, [path], warmup_bytes=1 << 20, max_line=65536)

    first = service()
    first.start()
    assert _wait_users(store, 1) == ["u0@x.test"]
    with path.open("a") as handle:
        handle.write(_login(1))
    assert _wait_users(store, 2) == ["u0@x.test", "u1@x.test"]
    first.stop()
    with path.open("a") as handle:
        handle.write(_login(2))
    second = service()
    second.start()
    try:
        assert _wait_users(store, 3) == ["u0@x.test", "u1@x.test", "u2@x.test"]
    finally:
        second.stop()
    assert first.error is None and second.error is None


def test_progress_shows_rate_and_eta_and_the_summary_counts_unknown_programs() -> None:
    stats = Stats(lines=50_000, events=40_000)
    stats.unknown["sshd"] = 7
    stats.kinds["deliver"] = 40_000
    out = io.StringIO()
    progress = import_progress(out, 10_000_000, stats)
    progress.advance(2_500_000)
    progress.show()
    line = out.getvalue().split("\r")[-1]
    assert "2.5 MB of 10.0 MB (25%)" in line and "ETA" in line and "lines/s" in line and "40,000 events" in line
    text = summary(stats, 2.0)
    assert "lines: 50,000 in 2.0 s (25,000 lines/s)" in text
    assert "events: 40,000 (deliver 40,000)" in text
    assert "  sshd: 7" in text
