"""SMTP workers under their supervisor (`smtp.workers`), against `mailwarden serve`.

Limits hold for all workers together (the shared client table), refs stay unique (each worker its
own share of the sequence), SIGHUP restarts the workers one by one with the new configuration and
SIGTERM lets a transaction in progress finish. The milter for Postfix is served by the supervisor,
also when there is no SMTP of our own (and then no worker). Crashes of workers and of the supervisor are in
test_crash_safety.py.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from mailwarden import refs
from tests.support.mailwarden import Mailwarden, running, write_config
from tests.support.milter import MilterClient
from tests.support.net import free_port
from tests.support.postgres import Postgres
from tests.support.smtp import events_of
from tests.support.wire import Closed, Reply, Wire

pytestmark = pytest.mark.integration

BOB = "bob@example.test"
CONNECTIONS = 20  # spread over two workers by the kernel: all on one has a chance of 2 in a million
ESTABLISHED, LISTEN = "01", "0A"  # TCP states as /proc/net/tcp writes them


def slot_of(ref: str) -> int:
    """The worker slot a ref was issued in (its share of the sequence)."""
    return (refs.decode(ref) >> 13) & refs.MAX_SLOT


def _tcp_table() -> list[tuple[int, int, str, int]]:
    """The TCP sockets of our network namespace: (local port, remote port, state, inode) each."""
    rows = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, remote, state, inode = (line.split()[i] for i in (1, 2, 3, 9))
            rows.append((int(local.rpartition(":")[2], 16), int(remote.rpartition(":")[2], 16), state, int(inode)))
    return rows


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            if (target := str(fd.readlink())).startswith("socket:["):
                inodes.add(int(target[len("socket:[") : -1]))
    return inodes


def serving_worker(server: Mailwarden, wire: Wire) -> int:
    """The SMTP worker process holding the server's end of `wire`'s connection."""
    client_port = wire.sock.getsockname()[1]
    (ours,) = [
        i
        for local, remote, state, i in _tcp_table()
        if (local, remote, state) == (server.smtp_port, client_port, ESTABLISHED)
    ]
    (worker,) = [pid for pid in server.worker_pids() if ours in _socket_inodes(pid)]
    return worker


def wait_until_stopping(server: Mailwarden, worker: int, timeout: float = 60.0) -> None:
    """Wait until `worker` has closed its listening sockets: it is stopping (Gateway.stop) and lets its
    transactions finish. With two workers a reload reaches the second one only once the first runs again."""
    deadline = time.monotonic() + timeout
    while True:
        listening = {i for local, _, state, i in _tcp_table() if (local, state) == (server.smtp_port, LISTEN)}
        try:
            if not listening & _socket_inodes(worker):
                return
        except FileNotFoundError:
            return  # it has ended: the transaction in flight will show it
        assert time.monotonic() < deadline, f"SMTP worker {worker} did not begin to stop:\n{server.log.read_text()}"
        time.sleep(0.05)


def connect_all(server: Mailwarden, count: int, source: str = "127.0.0.2") -> tuple[list[Wire], list[Reply]]:
    wires = [Wire(server.smtp_port, source=source) for _ in range(count)]
    return wires, [wire.reply() for wire in wires]


def recorded_sessions(server: Mailwarden, count: int, source: str) -> list[str]:
    """The sessions of `count` connections from `source`, once their connect events are stored: the
    workers' events reach the store with the supervisor's next commit, not when the greeting is sent
    (every connection has one, admitted or refused)."""
    deadline = time.monotonic() + 30
    while (
        len(sessions := [e["session"] for e in server.events() if e["kind"] == "connect" and e["client_ip"] == source])
        < count
    ):
        assert time.monotonic() < deadline, f"{len(sessions)} of {count} connections recorded"
        time.sleep(0.2)
    return sessions


def test_the_per_client_connection_limit_holds_for_all_workers_together(tmp_path: Path) -> None:
    overrides = {"smtp": {"workers": 2, "max_connections_per_ip": CONNECTIONS // 2, "max_connections": 100}}
    with running(tmp_path / "mw", overrides) as server:
        wires, greetings = connect_all(server, CONNECTIONS)
        try:
            admitted = [w for w, g in zip(wires, greetings, strict=True) if g.code == 220]
            refused = [g for g in greetings if g.code != 220]
            assert len(admitted) == CONNECTIONS // 2, [g.text for g in greetings]
            assert all(g.matches(r"^421 4\.7\.0 Your server 127\.0\.0\.2 has more connections") for g in refused)
            sessions = recorded_sessions(server, CONNECTIONS, "127.0.0.2")
            assert len({slot_of(session) for session in sessions}) == 2, "the connections did not reach both workers"
        finally:
            for wire in wires:
                wire.close()


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_the_connection_rate_limit_holds_for_all_workers_together(
    tmp_path: Path, store: str, request: pytest.FixtureRequest
) -> None:
    """SQLite: the workers count in the table they share; PostgreSQL: in the database (every node's),
    and the workers' events reach it through the supervisor's writer."""
    overrides: dict[str, dict[str, Any]] = {
        "smtp": {"workers": 2},
        "ratelimit": {"connections_per_minute": 5},
        "checks": {"order": ["ratelimit"]},
    }
    if store == "postgresql":
        postgres: Postgres = request.getfixturevalue("postgres")
        overrides["store"] = {"url": postgres.new_database()}
    with running(tmp_path / "mw", overrides) as server:
        greetings = []
        for _ in range(CONNECTIONS):
            with Wire(server.smtp_port, source="127.0.0.3") as wire:
                greetings.append(wire.reply())
        assert [g.code for g in greetings] == [220] * 5 + [421] * (CONNECTIONS - 5), [g.text for g in greetings]
        sessions = recorded_sessions(server, CONNECTIONS, "127.0.0.3")
        assert len({slot_of(session) for session in sessions}) == 2, "the connections did not reach both workers"


def test_refs_are_unique_across_workers_and_each_worker_has_its_own_share(tmp_path: Path) -> None:
    with running(tmp_path / "mw", {"smtp": {"workers": 2}}) as server:
        wires, greetings = connect_all(server, CONNECTIONS, source="127.0.0.4")
        for wire in wires:
            wire.command("QUIT")
            wire.close()
        assert all(g.code == 220 for g in greetings)
        sessions = recorded_sessions(server, CONNECTIONS, "127.0.0.4")
    assert len(set(sessions)) == CONNECTIONS
    assert {slot_of(session) for session in sessions} == {1, 2}


def _transaction_until_data(wire: Wire) -> None:
    wire.greet()
    assert wire.command("MAIL FROM:<alice@sender.test>").code == 250
    assert wire.command(f"RCPT TO:<{BOB}>").code == 250
    assert wire.command("DATA").code == 354
    wire.send(b"Subject: in flight\r\n\r\nthe first half\r\n")


def test_sighup_restarts_the_workers_with_the_new_configuration_and_a_transaction_in_flight_finishes(
    tmp_path: Path,
) -> None:
    server = Mailwarden(tmp_path / "mw", {"smtp": {"workers": 2, "hostname": "before.example.test"}})
    server.add_user(BOB)
    server.start()
    try:
        before = sorted(server.worker_pids())
        with Wire(server.smtp_port) as in_flight:
            _transaction_until_data(in_flight)
            worker = serving_worker(server, in_flight)
            sections = dict(server.sections)
            sections["smtp"] = {**sections["smtp"], "hostname": "after.example.test"}
            write_config(server.config, sections)
            os.kill(server.pid, signal.SIGHUP)
            wait_until_stopping(server, worker)  # the reload has reached the worker of this session
            in_flight.send(b"the second half\r\n.\r\n")
            finished = in_flight.reply()
        assert finished.code == 250, finished.text
        deadline = time.monotonic() + 60
        while b"reloaded: 2 SMTP workers" not in server.log.read_bytes():
            assert time.monotonic() < deadline, server.log.read_text()
            time.sleep(0.2)
        after = sorted(server.worker_pids())
        assert len(after) == 2 and not set(after) & set(before)
        with Wire(server.smtp_port) as wire:
            assert wire.reply().text == "220 after.example.test ESMTP mailwarden"
        (stored,) = server.messages(BOB)
        assert stored.endswith(b"the first half\r\nthe second half\r\n")
    finally:
        server.stop()


def test_sigterm_lets_a_transaction_finish_and_answers_idle_sessions_421(tmp_path: Path) -> None:
    server = Mailwarden(tmp_path / "mw", {"smtp": {"workers": 2}})
    server.add_user(BOB)
    server.start()
    try:
        idle = Wire(server.smtp_port)
        idle.greet()
        with Wire(server.smtp_port) as in_flight:
            _transaction_until_data(in_flight)
            worker = serving_worker(server, in_flight)
            os.kill(server.pid, signal.SIGTERM)
            wait_until_stopping(server, worker)
            in_flight.send(b"the second half\r\n.\r\n")
            finished = in_flight.reply()
        assert finished.code == 250, finished.text
        shutdown = idle.reply()
        assert shutdown.matches(r"^421 4\.3\.2 Service shutting down.*ref=[0-9A-Z]{12}$"), shutdown.text
        with pytest.raises((Closed, ConnectionError)):
            idle.reply()
        assert server.process is not None and server.process.wait(timeout=60) == 0
        ref = finished.text.rpartition("ref=")[2]
        assert [e["kind"] for e in events_of(server, ref, "accept") if e["kind"] in ("deliver", "accept")] == [
            "deliver",
            "accept",
        ]
    finally:
        server.stop()


def test_without_smtp_listen_no_worker_starts_and_the_supervisor_serves_the_milter(tmp_path: Path) -> None:
    port = free_port()
    overrides = {"smtp": {"listen": []}, "milter": {"listen": [f"127.0.0.1:{port}"]}}
    with running(tmp_path / "mw", overrides) as server:
        assert f"mailwarden ready: milter 127.0.0.1:{port};" in server.log.read_text()
        commands = [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in server.worker_pids()]
        assert not [c for c in commands if b"mailwarden.workers.worker" in c], commands
        with MilterClient(port) as client:
            replies = client.session()
        assert replies[-1].command == "c", replies
        (added,) = [r for r in replies if r.command == "i" and b"X-Mailwarden-Ref" in r.data]
        (accept,) = [e for e in server.events() if e["kind"] == "accept"]
        assert accept["source"] == "milter" and accept["ref"].encode() in added.data


def test_a_second_mailwarden_serve_on_the_smtp_port_of_a_running_one_is_refused_with_the_reason(
    tmp_path: Path,
) -> None:
    """The workers' sockets share their port by SO_REUSEPORT, which would let a second instance of the
    same user join them silently and take part of the mail, decided by another configuration."""
    with running(tmp_path / "mw", {"smtp": {"workers": 2}}) as first:
        second = Mailwarden(tmp_path / "second", {"smtp": {"listen": [f"127.0.0.1:{first.smtp_port}"]}})
        refused = second.cli("serve", check=False)
        assert refused.returncode == 2, refused.stderr
        assert f"cannot listen on 127.0.0.1:{first.smtp_port} (smtp.listen): Address already in use" in refused.stderr
