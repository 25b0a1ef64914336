"""Reference ids (`ref`): short, unambiguous, unique across nodes and restarts, sortable by time.

12 characters of Crockford's base32 (no I, L, O, U: nothing to confuse when read out over the
phone) encode 60 bits: 31 bits of seconds since 2024-01-01 (good until 2092), 10 bits of node id
and a 19-bit sequence within the second. The sequence is split between the processes of a node:
6 bits name the process's slot (0 the supervisor with POP3, 1-63 the SMTP workers) and 13 bits
count (8,192 refs per second and process; more borrow the next second). The generator never goes
back in time: after a restart it waits until the second has passed in which the previous process
in its slot may have issued refs, so the same node can never issue the same ref twice.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from typing import Final

ALPHABET: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
LENGTH: Final = 12
EPOCH: Final = 1_704_067_200  # 2024-01-01T00:00:00Z
_SEQ_BITS: Final = 19
_SLOT_BITS: Final = 6
_COUNT_BITS: Final = _SEQ_BITS - _SLOT_BITS
MAX_SLOT: Final = (1 << _SLOT_BITS) - 1  # the processes of a node that issue refs at once: at most 64
_NODE_BITS: Final = 10
PATTERN: Final = re.compile(rf"^[{ALPHABET}]{{{LENGTH}}}$")


def node_id(name: str) -> int:
    """A stable 10-bit id from the node name (distinct names should get distinct ids; see docs)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:2], "big") % (1 << _NODE_BITS)


def encode(value: int) -> str:
    chars = []
    for _ in range(LENGTH):
        chars.append(ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def decode(ref: str) -> int:
    value = 0
    for char in normalize(ref):
        value = value * 32 + ALPHABET.index(char)
    return value


def normalize(text: str) -> str:
    """Upper-case and map the look-alikes people type (O->0, I/L->1) to the alphabet."""
    return text.strip().upper().replace("O", "0").replace("I", "1").replace("L", "1")


def is_ref(text: str) -> bool:
    return PATTERN.match(normalize(text)) is not None


def timestamp(ref: str) -> int:
    """The Unix second a ref was issued in."""
    return (decode(ref) >> (_NODE_BITS + _SEQ_BITS)) + EPOCH


class RefGenerator:
    def __init__(self, node_name: str, *, slot: int = 0, wait_for_fresh_second: bool = True) -> None:
        """`slot`: this process's share of the node's sequence (0 the supervisor, 1-63 the SMTP workers)."""
        if not 0 <= slot <= MAX_SLOT:
            raise ValueError(f"ref slot {slot} is not between 0 and {MAX_SLOT}")
        self._node = node_id(node_name)
        self._slot = slot << _COUNT_BITS
        self._lock = threading.Lock()
        self._second = int(time.time()) - EPOCH
        if wait_for_fresh_second:  # a process that ran before us may have used this second
            time.sleep(max(0.0, self._second + EPOCH + 1 - time.time()))
            self._second = int(time.time()) - EPOCH
        self._seq = 0

    def new(self) -> str:
        with self._lock:
            now = int(time.time()) - EPOCH
            if now > self._second:
                self._second, self._seq = now, 0
            elif self._seq >= 1 << _COUNT_BITS:  # more than 8,192 in a second: borrow the next one
                self._second, self._seq = self._second + 1, 0
            value = (self._second << (_NODE_BITS + _SEQ_BITS)) | (self._node << _SEQ_BITS) | self._slot | self._seq
            self._seq += 1
        return encode(value)
