"""Events from the SMTP workers into the one store writer of the supervisor.

A worker reads the store itself (mailboxes, greylisting, pregreet passes), but its events go to
the supervisor (`EventClient`, the worker's `EventWriter`), whose store writer commits them
together with every other worker's: one transaction and one fsync for all of them, where a
writer per worker would take SQLite's write lock in turn and fsync each time. Measured with
bench/event_writers.py (figures in bench/README.md).

The semantics are the store's own (`Store.commit_soon`): a commit is answered once it and every
event its worker sent before it are committed, and its own events are not kept for a retry when
that fails. The link is a socketpair the supervisor made before it started the worker, so no one
else can write to it; frames are a 4-byte length and a pickle of the records.
"""

from __future__ import annotations

import itertools
import logging
import pickle
import socket
import struct
import threading
from collections.abc import Iterable, Sequence
from typing import Any, Final

from mailwarden.events import Event
from mailwarden.store.base import Committed, Position, StoreError, wait_until_committed
from mailwarden.store.parts import Store

log = logging.getLogger(__name__)

_LENGTH: Final = struct.Struct("!I")
_MAX_FRAME: Final = 1 << 30


def send_frame(sock: socket.socket, payload: object) -> None:
    data = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
    sock.sendall(_LENGTH.pack(len(data)) + data)


def receive_frame(sock: socket.socket) -> Any | None:
    """The next frame's payload; None at the end of the stream."""
    header = _receive_exactly(sock, _LENGTH.size)
    if header is None:
        return None
    (length,) = _LENGTH.unpack(header)
    if length > _MAX_FRAME:
        raise StoreError(f"an event frame of {length} bytes: the link to the event writer is broken")
    data = _receive_exactly(sock, length)
    if data is None:
        return None
    return pickle.loads(data)


def _receive_exactly(sock: socket.socket, size: int) -> bytes | None:
    chunks: list[bytes] = []
    while size:
        chunk = sock.recv(min(size, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _store_error(problem: str, reason: str) -> StoreError:
    """The supervisor's StoreError again, with its catalog reason."""
    error = StoreError(problem)
    error.reason = reason
    return error


class EventClient:
    """A worker's event writer: events travel to the supervisor, commits are answered from there.

    Appends made on the event loop are kept until the next commit (or `interval` seconds) and
    then sent in one frame with it; a commit is sent at once, from the thread that asks for it
    (a delivery thread), so no thread of ours sits in between. Answers arrive on a thread that
    calls each commit's `done`.
    """

    def __init__(self, sock: socket.socket, interval: float) -> None:
        self._sock = sock
        self._interval = interval
        self._lock = threading.Lock()  # the pending records and the socket's sending side
        self._records: list[tuple[Any, ...]] = []
        self._waiting: dict[int, Committed] = {}
        self._ids = itertools.count(1)
        self._broken: StoreError | None = None
        self._closed = threading.Event()
        self._due = threading.Event()
        self._receiver = threading.Thread(target=self._receive, name="events-answers", daemon=True)
        self._sender = threading.Thread(target=self._send_due, name="events-sender", daemon=True)
        self._receiver.start()
        self._sender.start()

    # -- the EventWriter interface (store/base.py)
    def put(self, event: Event) -> None:
        with self._lock:
            self._records.append(("e", event))
            first = len(self._records) == 1
        if first:
            self._due.set()

    def put_many(self, events: Iterable[Event]) -> None:
        for event in events:
            self.put(event)

    def put_position(self, position: Position) -> None:
        with self._lock:
            self._records.append(("p", position))
        self._due.set()

    def put_bulk(self, events: Sequence[Event], positions: Sequence[Position]) -> None:
        with self._lock:
            self._records.append(("b", list(events), list(positions)))
        self._due.set()

    def commit_soon(self, events: Sequence[Event], done: Committed) -> None:
        with self._lock:
            broken = self._broken
            if broken is None:
                number = next(self._ids)
                self._waiting[number] = done
                self._records.append(("c", number, list(events)))
                self._send_locked()  # if the link is gone, every waiting commit is told so, this one too
                return
        done(broken)

    def flush(self) -> None:
        wait_until_committed(self)

    def close(self) -> None:
        try:
            self.flush()
        except StoreError as exc:
            log.error("events not handed to the supervisor's writer: %s", exc)
        self._closed.set()
        self._due.set()
        self._sender.join()
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._receiver.join()
        self._sock.close()

    # -- the link
    def _send_locked(self) -> None:
        """Send the pending records (the lock is held)."""
        records, self._records = self._records, []
        try:
            send_frame(self._sock, records)
        except OSError as exc:
            self._fail(StoreError(f"the supervisor's event writer is gone: {exc}"))

    def _send_due(self) -> None:
        """Appends that no commit took along go after `interval` seconds (refusals, connects)."""
        while not self._closed.is_set():
            self._due.wait()
            self._due.clear()
            if self._closed.wait(self._interval):
                return
            with self._lock:
                if self._records and self._broken is None:
                    self._send_locked()

    def _receive(self) -> None:
        error: StoreError | None = None
        try:
            while (answers := receive_frame(self._sock)) is not None:
                for number, problem in answers:
                    with self._lock:
                        done = self._waiting.pop(number, None)
                    if done is not None:
                        done(None if problem is None else _store_error(*problem))
        except (OSError, StoreError, pickle.UnpicklingError) as exc:
            error = StoreError(f"the link to the supervisor's event writer broke: {exc}")
        if not self._closed.is_set():
            log.error("the supervisor's event writer went away: events can no longer be committed")
        with self._lock:
            self._fail(error or StoreError("the supervisor's event writer went away"))

    def _fail(self, error: StoreError) -> None:
        """The link is gone (the lock is held): every waiting commit learns it, and every later one."""
        if self._broken is None:
            self._broken = error
        waiting, self._waiting = self._waiting, {}
        for done in waiting.values():
            done(error)


class EventService:
    """The supervisor's end: one thread per worker link, handing its records to the store's writer."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def serve(self, sock: socket.socket, name: str) -> threading.Thread:
        """Read `sock` until the worker closes it (or dies); the returned thread ends after its last record is queued."""
        thread = threading.Thread(target=self._serve, args=(sock, name), name=f"events-from-{name}", daemon=True)
        thread.start()
        return thread

    def _serve(self, sock: socket.socket, name: str) -> None:
        answering = threading.Lock()

        def answer(number: int) -> Committed:
            def done(error: StoreError | None) -> None:
                with answering:
                    try:  # the reason travels too: a full spool is refused with its own (451 4.3.0)
                        send_frame(sock, [(number, None if error is None else (str(error), error.reason))])
                    except OSError:
                        pass  # the worker is gone; its sessions have no one to answer

            return done

        store = self.store
        try:
            while (records := receive_frame(sock)) is not None:
                for record in records:
                    kind = record[0]
                    if kind == "e":
                        store.append(record[1])
                    elif kind == "c":
                        store.commit_soon(record[2], answer(record[1]))
                    elif kind == "p":
                        store.save_position(record[1])
                    elif kind == "b":
                        store.append_bulk(record[1], record[2])
        except (OSError, StoreError, pickle.UnpicklingError) as exc:
            log.error("the event link of %s broke: %s", name, exc)
        finally:
            sock.close()
