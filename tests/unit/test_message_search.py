"""Search on the message index (issue 12, item 3): every filter in the store, keyset pages, counts,
and a customer's scope that no other filter reaches past.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mailwarden.cli import main
from mailwarden.ingest import parse_lines
from mailwarden.store import Store, sqlite_index
from mailwarden.store.sqlite import SqliteStore
from mailwarden.trace.search import AddressFilter, SearchSpec, count, search, search_index
from tests.unit.test_message_keys import FILTERED
from tests.unit.test_trace_diagnosis import MINUTE, T0, Session

CUSTOMER_A = frozenset({"a.test"})
CUSTOMER_B = frozenset({"b.test"})


@pytest.fixture
def store(store: Store) -> Store:
    """The shared fixture's store (both backends) with these mailboxes."""
    for mailbox in ("ann@a.test", "amy@a.test", "bea@b.test"):
        store.add_mailbox(mailbox, "x")
    return store


def played(store: Store) -> None:
    """Twelve messages a minute apart from 192.0.2.N; the last is to a customer A and a customer B recipient."""
    for n in range(11):
        s = Session(store, f"1AAAAAAAAAS{n:X}", T0 + n * MINUTE, client_ip=f"192.0.2.{n}")
        s.mail(f"sender{n % 3}@s{n % 2}.test")
        if n % 4 == 3:
            s.refuse("rcpt.unknown_user", 550, "5.1.1", "rcpt", recipient=f"nobody{n}@a.test")
        elif n % 4 == 1:
            s.refuse("greylisted", 451, "4.7.1", "rcpt", recipient="bea@b.test")
        else:
            s.rcpt("ann@a.test")
            s.deliver(["ann@a.test"], message_id=f"<m{n}@s.test>")
        s.close()
    both = Session(store, "1AAAAAAAAAT0", T0 + 20 * MINUTE, client_ip="198.51.100.7")
    both.mail("alice@shared.test")
    both.rcpt("amy@a.test")
    both.rcpt("bea@b.test")
    both.deliver(["amy@a.test", "bea@b.test"], message_id="<both@shared.test>")
    both.close()
    store.flush()


def ids(store: Store, **spec: object) -> list[str]:
    found = search(store, SearchSpec(**spec), retention_days=3650, now=T0)  # type: ignore[arg-type]
    return [trace.id for trace in found.messages]


def recipients(store: Store, **spec: object) -> set[str]:
    return {row.recipient for row in search_index(store, SearchSpec(limit=500, **spec)).rows}  # type: ignore[arg-type]


def test_every_filter_runs_on_the_index(store: Store) -> None:
    played(store)
    store.append_many(parse_lines(FILTERED, node="mta", reference_us=T0))
    store.flush()
    assert ids(store, recipient=AddressFilter.parse("nobody3@a.test")) == ["1AAAAAAAAAS3"]
    assert ids(store, recipient=AddressFilter.parse("NOBODY3@A.test")) == ["1AAAAAAAAAS3"]  # any case
    assert len(ids(store, recipient=AddressFilter.parse("@b.test"), limit=50)) == 4
    assert ids(store, recipient=AddressFilter.parse("*body7*")) == ["1AAAAAAAAAS7"]
    assert set(ids(store, sender=AddressFilter.parse("sender1@s1.test"))) == {"1AAAAAAAAAS1", "1AAAAAAAAAS7"}
    assert len(ids(store, sender=AddressFilter.parse("@s0.test"))) == 6
    assert len(ids(store, sender=AddressFilter.parse("*nder2*"))) == 3
    assert ids(store, client="192.0.2.5") == ["1AAAAAAAAAS5"]
    assert ids(store, client="192.0.2.8/30") == ["1AAAAAAAAASA", "1AAAAAAAAAS9", "1AAAAAAAAAS8"]
    assert ids(store, ref="1AAAAAAAAAS4") == ["1AAAAAAAAAS4"]
    assert ids(store, message_id="<m6@s.test>") == ["1AAAAAAAAAS6"]
    assert ids(store, status="tempfailed") == ["1AAAAAAAAAS9", "1AAAAAAAAAS5", "1AAAAAAAAAS1"]
    assert ids(store, reason="rcpt.unknown_user") == ["1AAAAAAAAAS7", "1AAAAAAAAAS3"]
    assert ids(store, since_us=T0 + 9 * MINUTE, until_us=T0 + 11 * MINUTE) == ["1AAAAAAAAASA", "1AAAAAAAAAS9"]
    (filtered,) = search(store, SearchSpec(queue_id="4F3C520E2D3"), retention_days=3650, now=T0).messages
    assert filtered.queue_id == "32E7B20E1A7"  # a re-injected hop's queue id finds its message
    # a message matches when one recipient's row meets every filter at once
    assert ids(store, recipient=AddressFilter.parse("bea@b.test"), status="delivered") == ["1AAAAAAAAAT0"]
    assert recipients(store, recipient=AddressFilter.parse("@b.test"), status="tempfailed") == {"bea@b.test"}


def test_keyset_pages_walk_every_message_once_newest_first_as_pages_by_number_do(store: Store) -> None:
    played(store)
    walked: list[str] = []
    cursor = None
    while True:
        page = search(store, SearchSpec(limit=5, cursor=cursor), retention_days=3650, now=T0)
        walked += [trace.id for trace in page.messages]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    numbered = [trace_id for offset in (0, 5, 10) for trace_id in ids(store, limit=5, offset=offset)]
    assert walked == numbered == ["1AAAAAAAAAT0", *(f"1AAAAAAAAAS{n:X}" for n in reversed(range(11)))]


def test_counts_by_status_and_reason_for_any_query(store: Store) -> None:
    played(store)
    counts = count(store, SearchSpec(recipient=AddressFilter.parse("@a.test")))
    assert counts.by_status() == {"delivered": 7, "rejected": 2}
    assert counts.by_reason() == {"delivered": 7, "rcpt.unknown_user": 2}
    assert counts.total == 9
    assert count(store, SearchSpec(since_us=T0 + 20 * MINUTE)).rows == [("delivered", "delivered", 2)]


# ---------------------------------------------------------------------------- scoping
def test_a_customer_scope_is_never_widened_by_another_filter(store: Store) -> None:
    played(store)
    everything = recipients(store, allowed_domains=CUSTOMER_A)
    assert everything and all(address.endswith("@a.test") for address in everything)
    for spec in (
        {"ref": "1AAAAAAAAAS1"},  # bea@b.test's greylisted message: B's, not A's
        {"client": "192.0.2.1"},
        {"client": "192.0.2.0/29"},
        {"sender": AddressFilter.parse("sender1@s1.test")},
        {"recipient": AddressFilter.parse("bea@b.test")},
        {"recipient": AddressFilter.parse("@b.test")},
        {"status": "tempfailed"},
        {"reason": "greylisted"},
    ):
        assert recipients(store, allowed_domains=CUSTOMER_A, **spec) <= everything, spec
        assert not any(
            row.recipient.endswith("@b.test")
            for row in search_index(store, SearchSpec(**spec, allowed_domains=CUSTOMER_A)).rows
        )  # type: ignore[arg-type]
    assert ids(store, ref="1AAAAAAAAAS1", allowed_domains=CUSTOMER_A) == []
    assert ids(store, ref="1AAAAAAAAAS1", allowed_domains=CUSTOMER_B) == ["1AAAAAAAAAS1"]
    assert ids(store, allowed_domains=frozenset()) == []  # no domain: nothing, not everything
    assert count(store, SearchSpec(allowed_domains=CUSTOMER_B)).by_status() == {"tempfailed": 3, "delivered": 1}


def test_a_message_to_two_customers_shows_each_only_its_own_recipient(store: Store) -> None:
    played(store)
    for scope, mine, theirs in ((CUSTOMER_A, "amy@a.test", "bea@b.test"), (CUSTOMER_B, "bea@b.test", "amy@a.test")):
        spec = SearchSpec(message_id="<both@shared.test>", allowed_domains=scope)
        assert [row.recipient for row in search_index(store, spec).rows] == [mine]
        (message,) = search(store, spec, retention_days=3650, now=T0).messages
        assert [fate.address for fate in message.recipients] == [mine]
        shown = json.dumps(message.to_json())
        assert mine in shown and theirs not in shown  # not in its recipients, nor in its events


# ---------------------------------------------------------------------------- the command line
def test_trace_count_and_cursor_on_the_command_line(
    store: Store, store_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[store]\nurl = "{store_url}"\n[node]\nname = "t"\n')
    played(store)
    assert main(["-c", str(config), "trace", "--to", "@a.test", "--count"]) == 0
    table = capsys.readouterr().out
    assert "delivered" in table and "rcpt.unknown_user" in table and table.rstrip().endswith("9")
    assert main(["-c", str(config), "trace", "--to", "@a.test", "--count", "--format", "json"]) == 0
    counted = json.loads(capsys.readouterr().out)
    assert counted["total"] == 9 and counted["by_status"] == {"delivered": 7, "rejected": 2}
    assert main(["-c", str(config), "trace", "--limit", "3", "--format", "json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert main(["-c", str(config), "trace", "--limit", "3", "--format", "json", "--cursor", first[-1]["cursor"]]) == 0
    second = json.loads(capsys.readouterr().out)
    assert main(["-c", str(config), "trace", "--limit", "3", "--format", "json", "--page", "2"]) == 0
    assert [m["id"] for m in second] == [m["id"] for m in json.loads(capsys.readouterr().out)]
    assert [m["id"] for m in first + second] == [
        "1AAAAAAAAAT0",
        "1AAAAAAAAASA",
        "1AAAAAAAAAS9",
        *(f"1AAAAAAAAAS{n}" for n in (8, 7, 6)),
    ]


def test_a_busy_client_network_walks_the_time_index_and_finds_the_same_messages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite only: its own plan for a busy network (PostgreSQL's planner chooses by itself)."""
    store = SqliteStore(tmp_path / "store.db", batch_interval=0.001)
    played(store)
    spec = SearchSpec(client="192.0.2.0/24", limit=4)
    quiet = [search_index(store, spec), search_index(store, SearchSpec(client="192.0.2.0/24", limit=4, offset=4))]
    monkeypatch.setattr(sqlite_index, "_BUSY_NETWORK", 2)  # this network now counts as busy
    busy = [search_index(store, spec), search_index(store, SearchSpec(client="192.0.2.0/24", limit=4, offset=4))]
    store.close()
    assert [p.rows for p in busy] == [p.rows for p in quiet] and len(quiet[0].rows) >= 4
