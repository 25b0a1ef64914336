"""The public log corpora: every line parses, and where a corpus states the fields, ours agree."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from mailwarden.events import Event
from mailwarden.ingest import Ingester, parse_lines
from tests.support.corpora import all_lines, crowdsec_cases, fail2ban_samples, grok_cases

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
    "Meta.source_hostname": "client_name",
    "Parsed.remote_host": "client_name",
    "Meta.source_dns": "client_name",
    "Parsed.source_dns": "client_name",
    "Parsed.smtp_basic_status_code": "smtp_code",
    "Parsed.smtp_enhanced_status_code": "enhanced_code",
    "Meta.source_helo": "helo",
    "Parsed.source_helo": "helo",
    "Parsed.source_user": "sender",
    "Parsed.target_user": "recipient",
    "Parsed.amavis_from": "sender",
    "Parsed.amavis_to": "recipient",
    "Parsed.amavis_size": "size",
    "Parsed.amavis_relay_ip": "client_ip",
    "Parsed.amavis_category": "detail.category",
    "Parsed.amavis_match": "detail.virus",
    "Parsed.amavis_id": "detail.amavis_id",
}
# Fields whose value must appear inside ours (crowdsec cuts the reply text into parts).
CROWDSEC_CONTAINED = {"Parsed.reason": "reply", "Meta.reason": "reply"}


@pytest.mark.parametrize(
    "directory",
    [
        "postfix-logs",
        "postscreen-logs",
        "exim-logs",
        "exim-syslog-logs",
        "amavis-logs",
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
            elif theirs == "Parsed.command":  # the stage of a reject, or the text of a non-SMTP command
                assert value in (event.detail.get("stage"), event.detail.get("command")), case.line
            elif theirs == "Meta.action":
                assert event.kind in ("reject", "tempfail") if value == "reject" else True, case.line
            elif theirs in CROWDSEC_CONTAINED:
                assert value.strip() in str(_field(event, CROWDSEC_CONTAINED[theirs])), f"{theirs} in {case.line!r}"
            elif ours is not None:
                expected = None if value == "unknown" and ours == "client_name" else value
                found = _field(event, ours)
                found = str(found) if isinstance(found, int) else found
                assert found == expected, f"{theirs} -> {ours} in {case.line!r}"


@pytest.mark.parametrize("name", ["dovecot", "postfix", "exim", "exim-spam"])
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
        checked += 1
        if "time" not in sample.expected:
            continue
        expected = datetime.strptime(sample.expected["time"][:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=FAIL2BAN_ZONE)
        # fail2ban reads TAI64N labels without their defined 10 s offset (libtai: 2**62 + 10 + unix
        # time); we follow libtai, so those lines differ by exactly 10 s.
        slack = 10 if sample.line.startswith("@") else 0
        assert event.ts // 1_000_000 - int(expected.timestamp()) == -slack, sample.line
    assert checked == sum(1 for s in fail2ban_samples(name) if s.expected.get("match") is True and "host" in s.expected)
    assert checked > 5


# grok fields that are (a part of) the reply text we keep.
GROK_REPLY_FIELDS = {
    "postfix_status_message",
    "postfix_smtp_response",
    "postfix_pipe_response",
    "postfix_local_response",
    "postfix_error_response",
    "postfix_proxy_message",
}
# postfix-grok-patterns cases that are fragments of a line, not lines.
GROK_FRAGMENTS = {"command-counter-data", "delays", "relay", "tls-features"}


def _grok_expectations(event: Event, results: dict[str, str]) -> list[tuple[str, Any, Any]]:
    """(field, theirs, ours) for every grok field that has a counterpart in our event."""
    checks: list[tuple[str, Any, Any]] = []

    def same(name: str, theirs: Any, ours: Any) -> None:
        checks.append((name, theirs, ours))

    def contains(name: str, theirs: str, ours: Any) -> None:
        checks.append((name, True, theirs in str(ours)))

    for key, value in results.items():
        if key == "postfix_queueid":
            same(key, None if value == "NOQUEUE" else value, event.queue_id)
        elif key == "postfix_client_ip":
            same(key, value, event.client_ip)
        elif key == "postfix_client_hostname":
            same(key, None if value == "unknown" else value, event.client_name)
        elif key == "postfix_status_code":
            same(key, int(value), event.smtp_code)
        elif key == "postfix_status_code_enhanced":
            same(key, value, event.enhanced_code)
        elif key in GROK_REPLY_FIELDS:
            contains(key, value, event.reply)
        elif key == "postfix_status":
            same(key, value, event.detail.get("status"))
        elif key == "postfix_smtp_stage":
            same(key, value, event.detail.get("stage"))
        elif key == "postfix_message-id":
            same(key, f"<{value}>" if value else None, event.message_id)
        elif key == "postfix_bounce_queueid":
            same(key, value, event.detail.get("notification_queue_id"))
        elif key in ("postfix_relay_hostname", "postfix_relay_ip", "postfix_relay_port"):
            contains(key, value, event.detail.get("relay"))
        elif key == "postfix_dnsbl_domain":
            same(key, value, event.detail.get("zone"))
        elif key == "postfix_dnsbl_result":
            same(key, value, event.detail.get("answer"))
        elif key == "postfix_postscreen_violation":
            contains(key, value, event.detail.get("verdict"))
        elif key == "postfix_keyvalue_data":
            for part in re.split(r",? (?=\w+=)", value.rstrip(",")):
                name, _, item = part.partition("=")
                item = item.rstrip(",")
                if name == "to":
                    same(f"{key}:to", item.strip("<>"), event.recipient)
                elif name == "from":
                    same(f"{key}:from", item.strip("<>"), event.sender)
                elif name == "dsn":
                    same(f"{key}:dsn", item, event.enhanced_code)
                elif name == "helo":
                    same(f"{key}:helo", item.strip("<>"), event.helo)
                elif name == "relay":
                    same(f"{key}:relay", item, event.detail.get("relay"))
    return checks


def test_postfix_grok_pattern_fields_agree_with_ours() -> None:
    compared = 0
    for case in grok_cases():
        if case.daemon in GROK_FRAGMENTS:
            continue
        program = "postfix/postfix-script" if case.daemon == "script" else f"postfix/{case.daemon}"
        line = f"Oct 26 17:46:59 mx {program}[4242]: {case.data}"
        events = parse_lines([line], reference_us=FAIL2BAN_NOW_US)
        unknown = [e for e in events if e.kind == "unknown"]
        # Operational warnings (a lookup table problem, a crashed process) stay `unknown` events.
        operational = case.data.startswith(("warning: ", "fatal: ")) and "message not accepted" not in case.data
        assert not unknown or operational, f"{case.name}: not understood: {case.data!r}"
        if not events:  # understood, but only state for later lines (qmgr `removed`, pickup ...) or noise
            continue
        for name, theirs, ours in _grok_expectations(events[0], case.results):
            assert ours == theirs, f"{case.name}: {name} is {ours!r}, the corpus says {theirs!r}"
            compared += 1
    assert compared > 150


# Refusals in the corpora (`reject`, `tempfail`, and the `bounce`/`defer` of a delivery the next hop
# refused) whose text names no cause ingest/reasons.py knows, per format. Upper bounds: the count may
# only go down. When a change explains more of them, the test still passes; lower the number here to
# the count it prints (`pytest -rP tests/unit/test_ingest_corpora.py -k without_a_reason` lists the
# texts still without a reason, the place to look for the next pattern). Most of Exim's are its test
# suite's made-up replies (`550 NO`, `451 Temp error`) that name no cause at all.
REFUSALS_WITHOUT_A_REASON_AT_MOST = {"postfix": 16, "exim": 1482, "amavis": 0}


def _corpus_refusals() -> dict[str, tuple[int, list[str]]]:
    """(refusals, texts of those without a reason) per format, over every corpus line."""
    found: dict[str, tuple[int, list[str]]] = {}
    streams = [[line for _, line in all_lines(folder)] for folder in ("fail2ban", "crowdsec-hub", "exim-testsuite")]
    streams.append([f"Oct 26 17:46:59 mx postfix/{case.daemon}[4242]: {case.data}" for case in grok_cases()])
    for lines in streams:
        for event in parse_lines(lines, node="corpus", reference_us=FAIL2BAN_NOW_US):
            if event.kind in ("reject", "tempfail", "bounce", "defer"):
                total, unexplained = found.setdefault(event.source, (0, []))
                if not event.reason:
                    unexplained.append(event.reply or event.evidence or "")
                found[event.source] = (total + 1, unexplained)
    return found


def test_refusals_without_a_reason_only_get_fewer() -> None:
    found = _corpus_refusals()
    for source, (total, unexplained) in sorted(found.items()):
        print(f"{source}: {total} refusals, {len(unexplained)} without a reason")
        for text in sorted(set(unexplained)):
            print(f"    {text[:200]}")
    assert set(found) <= set(REFUSALS_WITHOUT_A_REASON_AT_MOST), "a new format refuses: pin its count"
    for source, limit in REFUSALS_WITHOUT_A_REASON_AT_MOST.items():
        total, unexplained = found.get(source, (0, []))
        assert len(unexplained) <= limit, f"{source}: {len(unexplained)} of {total} refusals without a reason"
