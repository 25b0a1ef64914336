"""RFC 8601 section 5: incoming Authentication-Results fields with our authserv-id are forgeries.

They are found in the header block only (a stranger controls every byte: folding, comments,
case, quoting, a header block larger than one read, no body at all) and left out when the
message is copied - from memory or streamed from a spool file - while everything else stays
byte for byte.
"""

from __future__ import annotations

import io
import itertools
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailwarden.authresults import ID_SCAN_LIMIT, forged_fields
from mailwarden.spool import Spool

OURS = "mx.example.test"


def without_forgeries(message: bytes) -> bytes:
    kept, position = b"", 0
    for start, end in forged_fields(io.BytesIO(message), OURS):
        kept += message[position:start]
        position = end
    return kept + message[position:]


@pytest.mark.parametrize(
    "field",
    [
        b"Authentication-Results: mx.example.test; spf=pass smtp.mailfrom=a@b.test\r\n",
        b"Authentication-Results: mx.example.test;\r\n\tdkim=pass header.d=b.test;\r\n\tdmarc=pass\r\n",
        b"authentication-results:MX.Example.TEST; none\r\n",
        b"AUTHENTICATION-RESULTS : mx.example.test.; none\r\n",
        b"Authentication-Results: (checked (twice)) mx.example.test 1; none\r\n",
        b"Authentication-Results:\r\n mx.example.test; none\r\n",
        b'Authentication-Results: "mx.example.test"; none\r\n',
        b"Authentication-Results: (" + b"x" * ID_SCAN_LIMIT + b") other.test; none\r\n",  # unreadable: removed
    ],
)
def test_a_field_claiming_our_authserv_id_is_removed_however_it_is_written(field: bytes) -> None:
    message = b"Received: from a by b\r\n" + field + b"Subject: hi\r\n\r\nbody\r\n"
    assert without_forgeries(message) == b"Received: from a by b\r\nSubject: hi\r\n\r\nbody\r\n"


@pytest.mark.parametrize(
    "field",
    [
        b"Authentication-Results: other.example; spf=pass\r\n",
        b"Authentication-Results: mx.example.test.evil.test; spf=pass\r\n",
        b"Authentication-Results: (mx.example.test) other.example; spf=pass\r\n",
        b"ARC-Authentication-Results: i=1; mx.example.test; spf=pass\r\n",
        b"X-Authentication-Results: mx.example.test; spf=pass\r\n",
        b"Subject: Authentication-Results: mx.example.test; none\r\n",
    ],
)
def test_other_fields_stay(field: bytes) -> None:
    message = b"Received: from a by b\r\n" + field + b"\r\nbody\r\n"
    assert without_forgeries(message) == message


def test_the_body_is_never_touched() -> None:
    message = b"Subject: hi\r\n\r\nAuthentication-Results: mx.example.test; spf=pass\r\n"
    assert without_forgeries(message) == message
    assert without_forgeries(b"\r\nAuthentication-Results: mx.example.test; none\r\n").startswith(b"\r\nAuth")


def test_a_header_block_longer_than_one_read_and_a_message_without_a_body() -> None:
    filler = b"".join(b"X-Filler-%d: %s\r\n" % (n, b"y" * 90) for n in range(2000))  # about 200 kB
    forged = b"Authentication-Results: mx.example.test; dkim=pass\r\n"
    assert without_forgeries(filler + forged + b"\r\nbody\r\n") == filler + b"\r\nbody\r\n"
    assert without_forgeries(filler + forged.rstrip(b"\r\n")) == filler  # ends inside the field


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                b"Authentication-Results: mx.example.test; spf=pass\r\n",
                b"Authentication-Results: other.test; spf=pass\r\n",
                b"\tfolded continuation\r\n",
                b"Subject: x\r\n",
                b"garbage without a colon\r\n",
                b"\r\n",
                b"\n",
                b"Authentication-Results: mx.example.test",
            ]
        ),
        max_size=30,
    )
)
def test_any_stranger_header_gives_spans_that_are_whole_fields_in_order(lines: list[bytes]) -> None:
    message = b"".join(lines)
    spans = forged_fields(io.BytesIO(message), OURS)
    assert spans == sorted(spans) and all(a < b for a, b in spans)
    assert all(s[1] <= t[0] for s, t in itertools.pairwise(spans))
    for start, end in spans:
        assert message[start:end].lower().startswith(b"authentication-results")
        assert start == 0 or message[start - 1 : start] == b"\n"


@pytest.mark.parametrize("memory_limit", [1 << 30, 65536], ids=["in memory", "spooled"])
def test_the_spool_copies_and_streams_the_message_without_the_forged_fields(tmp_path: Path, memory_limit: int) -> None:
    forged = b"Authentication-Results: mx.example.test; spf=pass\r\n"
    head = b"Received: from a\r\n" + forged + b"Subject: hi\r\n" + forged + b"\r\n"
    body = bytes(range(256)) * 1024  # 256 kB with every byte value
    spool = Spool(tmp_path, memory_limit, 1 << 30)
    for offset in range(0, len(head + body), 10_000):
        spool.write((head + body)[offset : offset + 10_000])
    spool.finish()
    assert spool.in_memory is (memory_limit > len(head + body))
    with spool.open() as message:
        spans = forged_fields(message, OURS)
    expected = b"Received: from a\r\nSubject: hi\r\n\r\n" + body
    copy = io.BytesIO()
    spool.copy_into(copy, without=spans)
    assert copy.getvalue() == expected
    with spool.open(without=spans) as reader:
        assert reader.read() == expected
    spool.discard()
