"""What the gateway counts per client address: open connections, and with SMTP workers on one
machine also events per minute (rate limits).

With one process, plain dictionaries (`checks/base.py` `LocalCounts`; its rate limits are the store's
`RateLimitState`). With SMTP workers, every worker must see the others' counts, or a client could
open `max_connections_per_ip` connections to each worker: `SharedCounts` keeps them in one shared
memory table (a memfd the supervisor creates, mapped by every worker). It is also the workers'
`RateLimitState` on a store that counts on this machine (SQLite: `open_store_url(local_rates=...)`);
a store shared by nodes (PostgreSQL) counts in its database, for all workers of all nodes.
Each worker writes only its own part (a slot), so no lock is needed; a reader sums the slots. Measured against asking the supervisor (bench/worker_state.py): a connection's
opened+closed costs a few microseconds here and a round trip over a socket there.

Rates use the sliding window of store/rates.py: the previous minute's count weighted by how
much of it still lies in the window, plus this minute's. That estimate is linear, so the sum of
the workers' estimates is the estimate of all their events together.
"""

from __future__ import annotations

import hashlib
import logging
import mmap
import os
import time
from typing import Final, Literal, cast, get_args

from mailwarden.store.rates import WINDOW, estimate

log = logging.getLogger(__name__)

Kind = Literal["connections", "messages"]
_KINDS: Final = get_args(Kind)

SLOTS: Final = 64  # slot 0 is the supervisor's (its header: how many worker slots are in use), workers 1..63
ENTRIES: Final = 32_768  # client addresses per worker slot (active in the last two minutes)
MAX_PROBE: Final = 64
_ENTRY_BYTES: Final = 32  # a key (8 bytes) and six 32-bit fields
_FIELDS_PER_ENTRY: Final = 8  # in 32-bit units, the key's two included
_HEADER_BYTES: Final = 64  # per slot: its open connections in total
_SLOT_BYTES: Final = _HEADER_BYTES + ENTRIES * _ENTRY_BYTES
SIZE: Final = SLOTS * _SLOT_BYTES  # sparse: only the pages in use take memory
_CONNS, _MINUTE, _CONN_NOW, _CONN_BEFORE, _MSG_NOW, _MSG_BEFORE = range(2, 8)  # field offsets in an entry
_RATE: Final = {"connections": (_CONN_NOW, _CONN_BEFORE), "messages": (_MSG_NOW, _MSG_BEFORE)}
_WARN_EVERY: Final = 60.0


def create_table(workers: int = 1) -> int:
    """A new shared table for `workers` workers (a memfd, all zero); its descriptor, inherited by the workers."""
    fd = os.memfd_create("mailwarden-clients", os.MFD_CLOEXEC)
    os.ftruncate(fd, SIZE)
    set_workers(fd, workers)
    return fd


def set_workers(fd: int, workers: int) -> None:
    """How many worker slots the readers sum over (the supervisor's setting, changed by a reload)."""
    if not 1 <= workers < SLOTS:
        raise ValueError(f"{workers} workers: between 1 and {SLOTS - 1}")
    with mmap.mmap(fd, SIZE) as table:
        memoryview(table).cast("i")[0] = workers


def clear_slot(fd: int, slot: int) -> None:
    """Forget what a worker that ended had counted (its connections are gone with it)."""
    start = slot * _SLOT_BYTES
    with mmap.mmap(fd, SIZE) as table:
        table[start : start + _SLOT_BYTES] = bytes(_SLOT_BYTES)


def _key(client_ip: str) -> int:
    """A 64-bit key for an address, never 0 (0 marks an empty entry); the same in every process."""
    return int.from_bytes(hashlib.blake2b(client_ip.encode(), digest_size=8).digest(), "little") | 1


class SharedCounts:
    """The counts of all workers in one shared table; this worker writes its `slot` and reads all slots in use."""

    def __init__(self, fd: int, slot: int) -> None:
        if not 1 <= slot < SLOTS:
            raise ValueError(f"worker slot {slot}: between 1 and {SLOTS - 1}")
        self._map = mmap.mmap(fd, SIZE)
        self._keys = memoryview(self._map).cast("Q")  # the key of the entry at 32-bit position e: _keys[e // 2]
        self._ints = memoryview(self._map).cast("i")  # its field f: _ints[e + f]
        self._slot = slot
        self._warned = 0.0

    @property
    def _slots(self) -> range:
        return range(1, max(self._ints[0], self._slot) + 1)

    # -- layout
    @staticmethod
    def _header(slot: int) -> int:
        return slot * _SLOT_BYTES // 4

    @staticmethod
    def _entry(slot: int, index: int) -> int:
        """The entry's position in 32-bit units."""
        return (slot * _SLOT_BYTES + _HEADER_BYTES) // 4 + index * _FIELDS_PER_ENTRY

    def _find(self, slot: int, key: int, minute: int | None = None) -> int | None:
        """The entry of `key` in `slot`; with `minute`, one is made for it in this worker's own slot."""
        start = key & (ENTRIES - 1)
        reusable: int | None = None
        keys, ints = self._keys, self._ints
        for step in range(MAX_PROBE):
            entry = self._entry(slot, (start + step) & (ENTRIES - 1))
            found = keys[entry // 2]
            if found == key:
                return entry
            if found == 0:
                break
            if (
                minute is not None
                and reusable is None
                and ints[entry + _CONNS] == 0
                and ints[entry + _MINUTE] < minute - 1
            ):
                reusable = entry  # no connection open and nothing counted in the window: free again
        else:
            if reusable is None:
                return None
        if minute is None:
            return None
        entry = entry if reusable is None else reusable
        ints[entry + _CONNS : entry + _FIELDS_PER_ENTRY] = memoryview(bytes(24)).cast("i")  # fields first, key last:
        keys[entry // 2] = key  # a reader never sees the new key with the old counts
        return entry

    def _full(self, what: str) -> None:
        now = time.monotonic()
        if now - self._warned > _WARN_EVERY:
            self._warned = now
            log.warning("the shared client table of this worker is full: %s not counted for new addresses", what)

    # -- connections
    def opened(self, client_ip: str) -> tuple[int, int]:
        ints = self._ints
        ints[self._header(self._slot)] += 1
        total = sum(ints[self._header(slot)] for slot in self._slots)
        key = _key(client_ip)
        entry = self._find(self._slot, key, int(time.time() // WINDOW))
        if entry is None:
            self._full("connections")
            return 1, total
        ints[entry + _CONNS] += 1
        return self._sum(key, _CONNS), total

    def closed(self, client_ip: str) -> None:
        ints = self._ints
        ints[self._header(self._slot)] -= 1
        entry = self._find(self._slot, _key(client_ip))
        if entry is not None and ints[entry + _CONNS] > 0:
            ints[entry + _CONNS] -= 1

    def _sum(self, key: int, field: int) -> int:
        total = 0
        for slot in self._slots:
            entry = self._find(slot, key)
            if entry is not None:
                total += self._ints[entry + field]
        return total

    # -- rates
    def hit(self, kind: Kind, client_ip: str, now: float) -> int:
        minute = int(now // WINDOW)
        key = _key(client_ip)
        entry = self._find(self._slot, key, minute)
        if entry is None:
            self._full("rates")
            return 1
        ints = self._ints
        if ints[entry + _MINUTE] != minute:  # a new minute: this one's count becomes the previous
            for current, previous in _RATE.values():
                ints[entry + previous] = ints[entry + current] if ints[entry + _MINUTE] == minute - 1 else 0
                ints[entry + current] = 0
            ints[entry + _MINUTE] = minute
        current, previous = _RATE[kind]
        ints[entry + current] += 1
        in_minute = in_previous = 0  # all workers' counts of this minute and of the previous one
        for slot in self._slots:
            found = entry if slot == self._slot else self._find(slot, key)
            if found is None:
                continue
            at = ints[found + _MINUTE]
            if at == minute:
                in_minute += ints[found + current]
                in_previous += ints[found + previous]
            elif at == minute - 1:  # that worker saw no event of this client in this minute yet
                in_previous += ints[found + current]
        return estimate(in_minute, in_previous, now)

    async def rate_hit(self, counter: str, key: str, now: float) -> int:
        """`RateLimitState` (store/parts.py) for the workers of one machine: `hit` for every worker."""
        if counter not in _KINDS:
            raise ValueError(f"rate counter {counter!r}: the shared client table counts {', '.join(_KINDS)}")
        return self.hit(cast(Kind, counter), key, now)

    def close(self) -> None:
        self._keys.release()
        self._ints.release()
        self._map.close()
