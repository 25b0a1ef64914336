"""The public log corpora: every line parses, and where a corpus states the fields, ours agree."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from mailwarden.events import Event
from mailwarden.ingest import Ingester, parse_lines
from tests.support.corpora import all_lines, corpora_root, crowdsec_cases, fail2ban_samples

pytestmark = pytest.mark.skipif(corpora_root() is None, reason="shared/corpora is not next to this checkout")

# fail2ban's test suite runs with TZ=Europe/Zurich and "now" at 2005-08-14 12:00 local time.
FAIL2BAN_ZONE = ZoneInfo("Europe/Zurich")
FAIL2BAN_NOW_US = 1_124_013_600 * 1_000_000


@pytest.mark.parametrize("folder", ["fail2ban", "crowdsec-hub", "postfix-grok-patterns", "exim-testsuite"])
def test_every_corpus_line_parses_without_an_exception(folder: str) -> None:
    lines = [line for _, line in all_lines(folder)]
    events = parse_lines(lines, node="corpus")
    assert len(events) <= len(lines)
    assert all(event.evidence and event.evidence.startswith("-:") for event in events)


def _field(event: Event, name: str) -> Any:
    if name.startswith("detail."):
        return event.detail.get(name.removeprefix("detail."))
    return getattr(event, name)


# crowdsec's field names -> ours. Postfix and Exim write `unknown` for a client without rDNS,
# which our events keep as no client_name at all.
CROWDSEC_FIELDS = {
    "Meta.source_ip": "client_ip",
    "Parsed.dovecot_remote_ip": "client_ip",
    "Parsed.remote_addr": "client_ip",
    "Parsed.source_ip": "client_ip",
    "Meta.machine": "node",
    "Parsed.dovecot_user": "recipient",
    "Parsed.dovecot_local_ip": "detail.lip",
    "Parsed.protocol": "detail.protocol",
    "Parsed.dovecot_user_backend": "detail.backend",
}


@pytest.mark.parametrize(
    "directory",
    [
        "dovecot-logs",
        "dovecot-slow-bf",
        "dovecot-slow-bf-no-overlap",
        "dovecot-slow-bf-user-enum",
        "dovecot-time-based-bf",
        "dovecot-time-based-bf-user-enum",
    ],
)
def test_crowdsec_hub_fields_agree_with_ours(directory: str) -> None:
    _, cases = crowdsec_cases(directory)
    assert cases, f"no asserted lines found in {directory}"
    for case in cases:
        events = [e for e in parse_lines([case.line], node="none") if e.kind != "unknown"]
        assert len(events) == 1, f"no event for {case.line!r}"
        event = events[0]
        for theirs, value in case.fields.items():
            ours = CROWDSEC_FIELDS.get(theirs)
            if theirs == "Meta.dovecot_login_result":
                assert (event.kind, event.detail.get("result")) == ("login", "failed"), case.line
            elif ours is not None:
                expected = None if value == "unknown" and ours == "client_name" else value
                assert _field(event, ours) == expected, f"{theirs} -> {ours} in {case.line!r}"


@pytest.mark.parametrize("name", ["dovecot"])
def test_fail2ban_client_addresses_and_times_agree_with_ours(name: str) -> None:
    checked = 0
    ingester_events: list[Event] = []
    ingester = Ingester(ingester_events.append, default_node="none", zone=FAIL2BAN_ZONE)
    for sample in fail2ban_samples(name):
        if sample.expected.get("match") is not True or "host" not in sample.expected:
            continue
        ingester_events.clear()
        ingester.feed(ingester.stream("sample", FAIL2BAN_NOW_US), sample.line, 0)
        ingester.finish()
        found = [e for e in ingester_events if e.kind != "unknown"]
        assert found, f"no event for {sample.line!r}"
        event = found[0]
        assert event.client_ip == sample.expected["host"], sample.line
        expected = datetime.fromisoformat(sample.expected["time"][:19]).replace(tzinfo=FAIL2BAN_ZONE)
        # fail2ban reads TAI64N labels without their defined 10 s offset (libtai: 2**62 + 10 + unix
        # time); we follow libtai, so those lines differ by exactly 10 s.
        slack = 10 if sample.line.startswith("@") else 0
        assert event.ts // 1_000_000 - int(expected.timestamp()) == -slack, sample.line
        checked += 1
    assert checked > 10
