"""What the operator configures is what runs: the README's minimal production config, as written,
pointed at the test DNS servers (NSD with the test zones, rbldnsd serving zen.spamhaus.org).

Without `[checks] order` the configured blocklist and the DNS checks run, so the seed's cases are
refused: a client on the PBL, a sender domain whose MX is an IP address, one with a null MX and one
that does not exist (with today's default order of recipients, size, content all four got 250).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.dns import CLIENTS, DOMAINS, TEST_ZONES, ZEN_LIST, running_dns
from tests.support.mailwarden import Mailwarden, write_config
from tests.support.net import free_port
from tests.support.smtp import events_of, send

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_production_config() -> tuple[dict[str, Any], str]:
    """The README's "minimal production config" and the check order it says results."""
    text = README.read_text()
    section = text[text.index("A minimal production config:") :]
    toml = re.search(r"```toml\n(.*?)```", section, re.S)
    order = re.search(r"checks, in this order: (.*)\n", section)
    assert toml is not None and order is not None
    return tomllib.loads(toml.group(1)), order.group(1)


@pytest.fixture(scope="module")
def production(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mailwarden]:
    config, _ = readme_production_config()
    root = tmp_path_factory.mktemp("mw")
    with running_dns(root / "dns", TEST_ZONES, {"zen.spamhaus.org": ZEN_LIST}) as dns:
        port = free_port()
        # Only what a test machine needs changed: addresses, paths, and the test DNS servers.
        config["smtp"]["listen"] = [f"127.0.0.1:{port}"]
        config["mail"]["maildir_root"] = str(root / "mail")
        config["store"]["url"] = f"sqlite:///{root / 'mailwarden.db'}"
        config["dns"]["nameservers"] = [dns.nsd]
        (zone,) = config["dnsbl"]["zones"]
        assert zone["zone"] == "zen.spamhaus.org"
        zone["nameservers"] = [dns.rbldnsd]
        # The metrics stay on, on a port of their own: the README's 9187 collides with a second run on this machine.
        assert config["metrics"]["listen"].startswith("127.0.0.1:")
        config["metrics"]["listen"] = f"127.0.0.1:{free_port()}"
        config["tls"] = {"cert": str(root / "tls" / "cert.pem"), "key": str(root / "tls" / "key.pem")}
        config["pregreet"] = {"wait": 0}  # the greeting delay has tests of its own; here it would cost seconds
        instance = Mailwarden(root, config_file=write_config(root / "config.toml", config), smtp_port=port)
        instance.add_user("bob@example.net")
        instance.start()
        try:
            yield instance
        finally:
            instance.stop()


def test_config_check_prints_the_order_the_readme_shows(production: Mailwarden) -> None:
    _, order = readme_production_config()
    assert f"checks, in this order: {order}\n" in production.cli("config", "check").stdout


@pytest.mark.parametrize(
    ("client", "sender", "stage", "code", "enhanced", "reason"),
    [
        (CLIENTS["pbl"], f"alice@{DOMAINS['good']}", "rcpt", 554, "5.7.1", "client.dnsbl"),
        (CLIENTS["clean"], f"alice@{DOMAINS['mx_ip_literal']}", "mail", 550, "5.1.8", "sender.mx_ip_literal"),
        (CLIENTS["clean"], f"alice@{DOMAINS['null_mx']}", "mail", 550, "5.7.27", "sender.null_mx"),
        (CLIENTS["clean"], f"alice@{DOMAINS['missing']}", "mail", 550, "5.1.8", "sender.domain_missing"),
    ],
    ids=["client on the PBL", "MX is an IP address", "null MX", "sender domain does not exist"],
)
def test_the_readme_production_config_refuses_the_seeds_cases(
    production: Mailwarden, client: str, sender: str, stage: str, code: int, enhanced: str, reason: str
) -> None:
    reply = send(production, client, "mail.good.test", sender, "bob@example.net").last
    assert (reply.stage, reply.code, reply.enhanced) == (stage, code, enhanced), reply
    assert reply.ref is not None
    refusals = [e for e in events_of(production, reply.ref, "reject") if e["kind"] == "reject"]
    assert [e["reason"] for e in refusals] == [reason]


def test_the_readme_production_config_lets_a_clean_client_with_a_good_domain_through_to_data(
    production: Mailwarden,
) -> None:
    attempt = send(production, CLIENTS["clean"], "mail.good.test", f"alice@{DOMAINS['good']}", "bob@example.net")
    assert [r.code for r in attempt.replies[:4]] == [220, 250, 250, 250], attempt.replies
