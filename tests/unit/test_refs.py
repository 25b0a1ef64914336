"""Reference ids: short, unambiguous, unique across nodes and restarts, sortable by time."""

from __future__ import annotations

import time

import pytest

from mailwarden import refs
from mailwarden.refs import ALPHABET, RefGenerator


def test_a_ref_is_12_characters_without_look_alikes() -> None:
    ref = RefGenerator("mx1", wait_for_fresh_second=False).new()
    assert len(ref) == 12
    assert set(ref) <= set(ALPHABET)
    assert not set("ILOU") & set(ALPHABET)


def test_refs_of_one_generator_are_unique_and_in_issue_order() -> None:
    generator = RefGenerator("mx1", wait_for_fresh_second=False)
    issued = [generator.new() for _ in range(50_000)]
    assert len(set(issued)) == len(issued)
    assert issued == sorted(issued)  # fixed length, big-endian: string order is time order


def test_two_nodes_issue_different_refs_in_the_same_second() -> None:
    assert refs.node_id("mx1") != refs.node_id("mx2")
    first = {RefGenerator("mx1", wait_for_fresh_second=False).new() for _ in range(1)}
    second = {RefGenerator("mx2", wait_for_fresh_second=False).new() for _ in range(1)}
    assert not first & second


def test_the_processes_of_a_node_issue_different_refs_in_the_same_second() -> None:
    """The supervisor (slot 0) and every SMTP worker (1-63) have their own share of the sequence."""
    generators = [RefGenerator("mx1", slot=slot, wait_for_fresh_second=False) for slot in range(refs.MAX_SLOT + 1)]
    issued = [generator.new() for generator in generators for _ in range(100)]
    assert len(set(issued)) == len(issued)
    with pytest.raises(ValueError, match="between 0 and 63"):
        RefGenerator("mx1", slot=64)


def test_a_restarted_node_never_repeats_a_ref() -> None:
    before = RefGenerator("mx1", wait_for_fresh_second=False)
    issued = {before.new() for _ in range(1000)}
    after = RefGenerator("mx1")  # waits for a second the previous process cannot have used
    assert not issued & {after.new() for _ in range(1000)}


def test_more_than_the_sequence_holds_in_one_second_borrows_the_next_second() -> None:
    generator = RefGenerator("mx1", wait_for_fresh_second=False)
    generator._seq = (1 << 13) - 1
    last_of_second, borrowed = generator.new(), generator.new()
    assert borrowed > last_of_second
    assert refs.timestamp(borrowed) >= refs.timestamp(last_of_second)


def test_the_time_can_be_read_back() -> None:
    ref = RefGenerator("mx1", wait_for_fresh_second=False).new()
    assert abs(refs.timestamp(ref) - time.time()) < 5


@pytest.mark.parametrize(
    ("typed", "meaning"),
    [("1brdbb9hg000", "1BRDBB9HG000"), ("IBRDBB9HGOOO", "1BRDBB9HG000"), (" lbrdbb9hgooo ", "1BRDBB9HG000")],
)
def test_what_people_type_is_normalized_to_the_ref(typed: str, meaning: str) -> None:
    assert refs.normalize(typed) == meaning
    assert refs.is_ref(typed)
    assert refs.decode(typed) == refs.decode(meaning)


@pytest.mark.parametrize("text", ["1BRDBB9HG00", "1BRDBB9HG0000", "1BRDBB9HG00U", "1BRD-B9HG000", ""])
def test_other_text_is_not_a_ref(text: str) -> None:
    assert not refs.is_ref(text)


def test_encode_and_decode_are_inverse() -> None:
    for value in (0, 1, 31, 32, (1 << 60) - 1, 123_456_789_012_345):
        assert refs.decode(refs.encode(value)) == value
