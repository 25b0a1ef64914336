"""Reference ids (`ref`): short, unambiguous, unique across nodes and restarts, sortable by time.

12 characters of Crockford's base32 (no I, L, O, U: nothing to confuse when read out over the
phone) encode 60 bits: 31 bits of seconds since 2024-01-01 (good until 2092), 10 bits of node id
and a 19-bit sequence within the second (524,288 refs per second and node). The generator never
goes back in time: after a restart it waits until the second has passed in which the previous
process may have issued refs, so the same node can never issue the same ref twice.
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
    def __init__(self, node_name: str, *, wait_for_fresh_second: bool = True) -> None:
        self._node = node_id(node_name)
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
            elif self._seq >= 1 << _SEQ_BITS:  # more than 524k in a second: borrow the next one
                self._second, self._seq = self._second + 1, 0
            value = (self._second << (_NODE_BITS + _SEQ_BITS)) | (self._node << _SEQ_BITS) | self._seq
            self._seq += 1
        return encode(value)
