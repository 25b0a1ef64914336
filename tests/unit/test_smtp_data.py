"""The DATA decoder: the end marker, dot-unstuffing, bare CR/LF, long lines, and chunking.

The smuggling guard lives here: only <CR><LF>.<CR><LF> ends a message. Whatever way the bytes
are split into chunks by the network, the decoder must give the same result.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailwarden.smtp.data import DataDecoder


def decode(stream: bytes, *, chunks: list[int] | None = None, normalize: bool = True, limit: int = 1001) -> DataDecoder:
    decoder = DataDecoder(limit, normalize)
    out = b""
    position = 0
    for size in chunks or [len(stream)]:
        out += decoder.feed(stream[position : position + size])
        position += size
    if position < len(stream):
        out += decoder.feed(stream[position:])
    decoder.output = out  # type: ignore[attr-defined]
    return decoder


def output(decoder: DataDecoder) -> bytes:
    result: bytes = decoder.output  # type: ignore[attr-defined]
    return result


@pytest.mark.parametrize(
    "fake_end",
    [b"\n.\n", b"\n.\r\n", b"\r.\r", b"\r.\r\n", b"\r\n.\n", b"\r\n.\r", b"\n.\r"],
    ids=repr,
)
def test_only_crlf_dot_crlf_ends_the_message(fake_end: bytes) -> None:
    decoder = decode(b"Subject: x\r\n\r\nbefore" + fake_end + b"MAIL FROM:<evil@evil.test>\r\n")
    assert not decoder.done
    assert decoder.leftover == b""


def test_the_end_marker_ends_it_and_the_rest_is_left_over_for_the_command_reader() -> None:
    decoder = decode(b"Subject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n")
    assert decoder.done
    assert output(decoder) == b"Subject: x\r\n\r\nbody\r\n"
    assert decoder.leftover == b"QUIT\r\n"


def test_an_empty_message_is_just_the_dot() -> None:
    decoder = decode(b".\r\n")
    assert decoder.done
    assert output(decoder) == b""


def test_bytes_after_the_end_marker_in_later_chunks_are_left_over_too() -> None:
    decoder = DataDecoder(1001, True)
    assert decoder.feed(b"a\r\n.\r\nNO") == b"a\r\n"
    assert decoder.feed(b"OP\r\n") == b""
    assert decoder.leftover == b"NOOP\r\n"


@pytest.mark.parametrize(
    ("stuffed", "plain"),
    [
        (b"..\r\n.\r\n", b".\r\n"),
        (b"..a\r\n.\r\n", b".a\r\n"),
        (b"x\r\n...\r\n.\r\n", b"x\r\n..\r\n"),
        (b"x\r\n.y\r\n.\r\n", b"x\r\ny\r\n"),  # a single leading dot is removed too (RFC 5321 4.5.2)
        (b"a.\r\nb..c\r\n.\r\n", b"a.\r\nb..c\r\n"),  # dots inside a line stay
    ],
)
def test_dot_unstuffing(stuffed: bytes, plain: bytes) -> None:
    decoder = decode(stuffed)
    assert decoder.done
    assert output(decoder) == plain


def test_bare_lf_and_cr_are_normalized_and_counted() -> None:
    decoder = decode(b"a\nb\rc\r\nd\r\n.\r\n", normalize=True)
    assert output(decoder) == b"a\r\nb\r\nc\r\nd\r\n"
    assert decoder.bare_newlines == 2


def test_bare_lf_and_cr_are_only_counted_when_not_normalizing() -> None:
    decoder = decode(b"a\nb\rc\r\n.\r\n", normalize=False)
    assert output(decoder) == b"a\nb\rc\r\n"
    assert decoder.bare_newlines == 2


def test_normalizing_a_fake_end_marker_cannot_end_the_message() -> None:
    decoder = decode(b"first\n.\nsecond\r\n.\r\n")
    assert decoder.done
    assert output(decoder) == b"first\r\n.\r\nsecond\r\n"  # the "." is now content, never an end


def test_a_cr_at_the_end_of_a_chunk_waits_for_the_next_byte() -> None:
    decoder = DataDecoder(1001, True)
    assert decoder.feed(b"a\r") == b"a"
    assert decoder.feed(b"\nb\r\n.\r\n") == b"\r\nb\r\n"
    assert decoder.bare_newlines == 0


@pytest.mark.parametrize(("length", "too_long"), [(1001, False), (1002, True), (5000, True)])
def test_line_length_limit_counts_the_text_without_crlf(length: int, too_long: bool) -> None:
    decoder = decode(b"h: v\r\n\r\n" + b"x" * length + b"\r\nshort\r\n.\r\n", limit=1001)
    assert decoder.line_too_long is too_long


def test_a_long_line_split_over_many_chunks_is_still_seen() -> None:
    stream = b"a\r\n" + b"y" * 3000 + b"\r\n.\r\n"
    decoder = decode(stream, chunks=[7] * (len(stream) // 7), limit=2000)
    assert decoder.line_too_long


def test_lines_longer_than_1001_are_fine_up_to_the_configured_limit() -> None:
    decoder = decode(b"a\r\n" + b"y" * 60_000 + b"\r\n.\r\n", limit=65_536)
    assert not decoder.line_too_long
    assert output(decoder) == b"a\r\n" + b"y" * 60_000 + b"\r\n"


# ---------------------------------------------------------------------------- against a reference
def reference(stream: bytes, limit: int) -> tuple[bool, bytes, bytes, int, bool]:
    """The same decoding, written plainly: (done, content, leftover, bare newlines, line too long)."""
    data = b"\r\n" + stream
    end = data.find(b"\r\n.\r\n")
    if end < 0:
        return False, b"", b"", 0, False
    body, leftover = data[2 : end + 2], data[end + 5 :]
    lines = body.split(b"\r\n")
    content = b"\r\n".join(line[1:] if line.startswith(b".") else line for line in lines)
    bare = len(re.findall(rb"\r(?!\n)|(?<!\r)\n", content))
    normalized = re.sub(rb"\r(?!\n)|(?<!\r)\n", b"\r\n", content)
    # A line's octets up to its LF, a CR before the LF included, may be limit + 1.
    too_long = any(len(segment) > limit + 1 for segment in content.split(b"\n"))
    return True, normalized, leftover, bare, too_long


# Small alphabets make CR, LF and dots - the interesting bytes - frequent.
_PIECES = st.sampled_from([b"\r\n", b"\r", b"\n", b".", b"..", b"a", b"bc", b"\x00", b"\xff", b"\r\n.", b"x" * 40])


@settings(max_examples=400, deadline=None)
@given(
    pieces=st.lists(_PIECES, max_size=60),
    tail=st.sampled_from([b"\r\n.\r\n", b"\r\n.\r\nQUIT\r\n", b"", b"\r\n.\r"]),
    splits=st.lists(st.integers(min_value=1, max_value=9), max_size=40),
)
def test_any_chunking_gives_the_same_result_as_the_reference(
    pieces: list[bytes], tail: bytes, splits: list[int]
) -> None:
    stream = b"".join(pieces) + tail
    whole = decode(stream, limit=50)
    chunked = decode(stream, chunks=splits, limit=50)
    for decoder in (whole, chunked):
        done, content, leftover, bare, too_long = reference(stream, 50)
        assert decoder.done is done
        if done:
            assert output(decoder) == content
            assert decoder.leftover == leftover
            assert decoder.bare_newlines == bare
            assert decoder.line_too_long is too_long
