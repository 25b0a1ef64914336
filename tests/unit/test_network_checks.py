"""The network and sender checks' decisions, with scripted DNS answers."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mailwarden import authresults
from mailwarden.checks.base import Action, Check, CheckContext, Services, SessionInfo, Stage, Transaction, Verdict
from mailwarden.checks.chain import CheckChain
from mailwarden.checks.dnsbl import DnsblCheck, ZoneQuery
from mailwarden.checks.helo import helo_problem
from mailwarden.checks.rdns import GenericNames
from mailwarden.checks.sender_domain import inspect as inspect_domain
from mailwarden.checks.sender_domain import ip_literal
from mailwarden.config import Config, DnsblZone, FindingPolicy
from mailwarden.dns import MX, Answer, DnsTempError, dnsbl_name
from mailwarden.smtp.clients import SlidingCounter
from tests.support.fakedns import ScriptedResolver

GENERIC = GenericNames(Config().rdns.generic_keywords, [r"^host-\d+"])


@pytest.mark.parametrize(
    ("name", "ip", "why"),
    [
        ("84-1-2-3.dyn.example.net", "84.1.2.3", "address"),
        ("3.2.1.84.static.example.net", "84.1.2.3", "address"),
        ("p084001002003.example.de", "84.1.2.3", "address"),
        ("c-54010203.example.net", "84.1.2.3", "address"),
        ("dsl-pool.example.net", "84.1.2.3", "word 'dsl'"),
        ("cust12.cable.example.net", "84.1.2.3", "word 'cust'"),
        ("host-77.example.net", "84.1.2.3", "pattern"),
    ],
)
def test_generic_hostnames_are_recognized_and_say_why(name: str, ip: str, why: str) -> None:
    found = GENERIC.why(name, ip)
    assert found is not None and why in found


@pytest.mark.parametrize(
    "name", ["mail.example.net", "mx1.liverpool.example", "smtp.dynamic-dns.com", "mail-84.example.net"]
)
def test_mail_server_names_are_not_generic(name: str) -> None:
    assert GENERIC.why(name, "84.1.2.3") is None


@pytest.mark.parametrize(
    ("helo", "problem"),
    [
        ("mail.example.org", None),
        ("[192.0.2.7]", None),
        ("[IPv6:2001:db8::1]", None),
        ("192.0.2.7", "brackets"),
        ("localhost", "fully qualified"),
        ("bad_name!.example.org", "not a syntactically valid"),
        ("-x.example.org", "not a syntactically valid"),
        ("[999.1.1.1]", "not hold a valid IP"),
        ("MX.Example.Test", "our own name"),
        ("[127.0.0.1]", "our own address"),
        ("", "not a syntactically valid"),
    ],
)
def test_helo_names(helo: str, problem: str | None) -> None:
    found = helo_problem(helo, "192.0.2.7", frozenset({"mx.example.test"}), frozenset({"127.0.0.1"}))
    assert (found is None) if problem is None else (found is not None and problem in found)


@pytest.mark.parametrize(
    ("exchange", "literal"), [("1.2.3.4", True), ("[1.2.3.4]", True), ("[IPv6:2001:db8::1]", True), ("mx.a.b", False)]
)
def test_ip_literal_mx_targets(exchange: str, literal: bool) -> None:
    assert ip_literal(exchange) is literal


def services(**sections: Any) -> Services:
    return Services(config=Config(**sections), store=None, local_domains=frozenset())  # type: ignore[arg-type]


def context(svc: Services, ip: str = "192.0.2.7", sender: str | None = None) -> CheckContext:
    txn = Transaction(ref="R", sender=sender) if sender is not None else None
    return CheckContext(svc, SessionInfo(id="S", node="n", client_ip=ip, client_port=1), txn)


def listed(zone: str, ip: str, *answers: str, txt: bytes | None = None) -> dict[tuple[str, str], Any]:
    name = dnsbl_name(ip, zone)
    script: dict[tuple[str, str], Any] = {(name, "A"): Answer(name, "A", answers, ttl=60)}
    if txt is not None:
        script[(name, "TXT")] = Answer(name, "TXT", (txt,), ttl=60)
    return script


def dnsbl_verdict(script: dict[tuple[str, str], Any], **dnsbl: Any) -> tuple[Verdict | None, CheckContext]:
    svc = services(dnsbl=dnsbl)
    svc.resolver = ScriptedResolver(script)
    check = DnsblCheck.create(svc)
    ctx = context(svc)
    return asyncio.run(check.connect(ctx)), ctx  # type: ignore[attr-defined]


def test_spamhaus_pbl_answer_names_the_meaning_the_remedy_and_the_txt() -> None:
    script = listed("zen.spamhaus.org", "192.0.2.7", "127.0.0.11", txt=b"https://check.spamhaus.org/x")
    verdict, _ = dnsbl_verdict(script, zones=[{"zone": "zen.spamhaus.org"}])
    assert verdict is not None and verdict.action is Action.REJECT and verdict.code == 554
    assert verdict.values["meaning"] == "a dynamic or end-user address range (Spamhaus PBL)"
    assert "provider's mail server" in str(verdict.values["advice"])
    assert "check.spamhaus.org/x" in str(verdict.values["txt"])


def test_list_error_answers_are_never_listings() -> None:
    script = listed("zen.spamhaus.org", "192.0.2.7", "127.255.255.254")
    verdict, _ = dnsbl_verdict(script, zones=[{"zone": "zen.spamhaus.org"}])
    assert verdict is None


def test_weights_add_up_to_the_threshold_like_postscreen() -> None:
    script = {**listed("a.test", "192.0.2.7", "127.0.0.2"), **listed("b.test", "192.0.2.7", "127.0.0.2")}
    zones = [{"zone": "a.test", "weight": 1}, {"zone": "b.test", "weight": 1}]
    assert dnsbl_verdict(listed("a.test", "192.0.2.7", "127.0.0.2"), zones=zones, threshold=2)[0] is None
    verdict, _ = dnsbl_verdict(script, zones=zones, threshold=2)
    assert verdict is not None and verdict.action is Action.REJECT


def test_configured_answer_codes_override_meaning_and_action() -> None:
    script = listed("bl.test", "192.0.2.7", "127.0.0.4")
    zone = {"zone": "bl.test", "codes": {"127.0.0.3-127.0.0.5": {"meaning": "a botnet host", "action": "tempfail"}}}
    verdict, _ = dnsbl_verdict(script, zones=[zone])
    assert verdict is not None and verdict.action is Action.TEMPFAIL and verdict.code == 450
    assert verdict.values["meaning"] == "a botnet host"


def test_a_listing_with_action_score_adds_its_weight_as_points() -> None:
    verdict, _ = dnsbl_verdict(
        listed("bl.test", "192.0.2.7", "127.0.0.2"), zones=[{"zone": "bl.test", "weight": 3}], action="score"
    )
    assert verdict is not None and verdict.action is Action.SCORE and verdict.score == 3


def test_an_allowlist_listing_exempts_the_client_and_is_remembered() -> None:
    script = {**listed("bl.test", "192.0.2.7", "127.0.0.2"), **listed("wl.test", "192.0.2.7", "127.0.10.2")}
    zones = [{"zone": "bl.test"}, {"zone": "wl.test", "kind": "allow"}]
    verdict, ctx = dnsbl_verdict(script, zones=zones)
    assert verdict is not None and verdict.action is Action.TAG and verdict.reason == "client.allowlisted"
    assert ctx.session.results["dnswl"]["zone"] == "wl.test"


def test_an_unanswered_list_defers_instead_of_accepting() -> None:
    name = dnsbl_name("192.0.2.7", "bl.test")
    verdict, _ = dnsbl_verdict({(name, "A"): DnsTempError(name, "A", "timeout")}, zones=[{"zone": "bl.test"}])
    assert verdict is not None and verdict.action is Action.TEMPFAIL and verdict.reason == "infra.dns_tempfail"
    assert verdict.code == 451


def test_builtin_meanings_apply_to_a_renamed_mirror() -> None:
    query = ZoneQuery(DnsblZone(zone="zen.mirror.local", meanings="spamhaus-zen"), ScriptedResolver({}), "reject")
    explained = query.explain("127.0.0.4")
    assert explained is not None and "XBL" in explained.meaning


def test_sender_domain_findings() -> None:
    resolver = ScriptedResolver(
        {
            ("iplit.test", "MX"): Answer("iplit.test", "MX", (MX(10, "1.2.3.4"),), ttl=60),
            ("null.test", "MX"): Answer("null.test", "MX", (MX(0, ""),), ttl=60),
            ("flaky.test", "MX"): Answer("flaky.test", "MX", (MX(10, "mx.flaky.test"),), ttl=60),
            ("mx.flaky.test", "A"): DnsTempError("mx.flaky.test", "A", "timeout"),
        }
    )

    async def scenario() -> None:
        iplit = await inspect_domain(resolver, "iplit.test")
        assert iplit.problem == "sender.mx_ip_literal" and iplit.values["record"] == "iplit.test. MX 10 1.2.3.4."
        assert (await inspect_domain(resolver, "null.test")).problem == "sender.null_mx"
        assert (await inspect_domain(resolver, "gone.test")).problem == "sender.domain_missing"
        with pytest.raises(DnsTempError):
            await inspect_domain(resolver, "flaky.test")

    asyncio.run(scenario())


class Scoring(Check):
    def __init__(self, name: str, reason: str, score: float) -> None:
        self.name = name  # type: ignore[misc]
        self.verdict = Verdict(Action.SCORE, reason, {"client_ip": "192.0.2.7"}, score=score)

    async def connect(self, ctx: CheckContext) -> Verdict | None:
        return self.verdict


def test_scores_add_up_and_the_finding_that_reaches_the_limit_is_refused() -> None:
    chain = CheckChain([Scoring("a", "client.no_rdns", 4), Scoring("b", "client.dynamic_rdns", 6)], 5, 10)
    ctx = context(services())
    result = asyncio.run(chain.run(Stage.CONNECT, ctx))
    assert result.verdict is not None and result.verdict.action is Action.REJECT
    assert result.verdict.reason == "client.dynamic_rdns" and result.verdict.detail["score"] == 10
    below = CheckChain([Scoring("a", "client.no_rdns", 4)], 5, 10)
    assert asyncio.run(below.run(Stage.CONNECT, context(services()))).verdict is None


def test_a_configured_tempfail_uses_the_4xx_twin_of_the_catalog_code() -> None:
    verdict = Verdict.as_configured(FindingPolicy("tempfail", 0), "client.no_rdns", {}, client_ip="192.0.2.7")
    assert verdict is not None and (verdict.code, verdict.enhanced_code) == (450, "4.7.25")
    assert Verdict.as_configured(FindingPolicy("off", 0), "client.no_rdns", {}) is None


def test_authentication_results_quote_what_a_stranger_wrote() -> None:
    spf = {
        "result": "fail",
        "domain": "ex.test",
        "scope": "mailfrom",
        "identity": 'a b"c@ex.test',
        "decided_by": "-all",
    }
    header = authresults.header("mx.example.test", {"spf": spf})
    assert header is not None
    assert header.startswith("Authentication-Results: mx.example.test;\r\n\tspf=fail (ex.test: -all) ")
    assert 'smtp.mailfrom="a b\\"c@ex.test"' in header
    assert "\r\n" not in header[:-2].replace("\r\n\t", "")
    assert authresults.header("mx.example.test", {}) is None


def test_the_sliding_window_counts_the_last_minute() -> None:
    counter = SlidingCounter()
    assert [counter.hit("a", 60.0 + i) for i in range(3)] == [1, 2, 3]
    assert counter.hit("a", 150.0) <= 4  # half of the previous minute still counts
    assert counter.hit("a", 400.0) == 1


def test_a_sender_domain_that_cannot_exist_is_missing_without_asking_dns() -> None:
    resolver = ScriptedResolver({})
    report = asyncio.run(inspect_domain(resolver, "x" * 64 + ".example"))
    assert report.problem == "sender.domain_missing" and resolver.asked == []
