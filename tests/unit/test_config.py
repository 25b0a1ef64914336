"""The configuration: defaults, validation errors that name key/problem/fix, and its generated docs."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailwarden.config import Config, ConfigError, docs_markdown, load, starter

ROOT = Path(__file__).resolve().parents[2]


def test_docs_configuration_md_matches_the_schema() -> None:
    assert (ROOT / "docs" / "configuration.md").read_text() == docs_markdown(), "run `make docs`"


def test_defaults_need_no_file() -> None:
    config = load(None)
    assert config.smtp.listen == ["127.0.0.1:2525"]
    assert config.store.url == "sqlite:///var/mailwarden.db"


def test_design_contract_keys_exist(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        """
[node]
name = "mx1"
[smtp]
listen = ["127.0.0.1:2525"]
hostname = "mx.example.test"
max_message_size = 26214400
[mail]
domains = ["example.test"]
maildir_root = "var/mail"
[store]
url = "sqlite:///var/mailwarden.db"
[dns]
nameservers = ["127.0.0.1:5353"]
timeout = 2.0
[[dnsbl.zones]]
zone = "zen.spamhaus.org"
[scan.clamd]
address = "127.0.0.1:3310"
[scan.spam]
engine = "rspamd"
address = "127.0.0.1:11333"
[tls]
cert = "var/tls/cert.pem"
key = "var/tls/key.pem"
[pop3]
listen = ["127.0.0.1:1110"]
allow_plaintext_auth = false
[web]
listen = "127.0.0.1:8025"
[explain]
url = "https://mx.example.test/why/"
"""
    )
    config = load(path)
    assert config.dnsbl.zones[0].zone == "zen.spamhaus.org"
    assert config.path("var/mail") == tmp_path / "var/mail"


@pytest.mark.parametrize(
    ("toml", "words"),
    [
        ('[smtp]\nlisten = ["127.0.0.1"]\n', ["`smtp.listen`", "give a port"]),
        ('[smtp]\nlisten = ["127.0.0.1:2\u00b2"]\n', ["`smtp.listen`", "the port must be a number from 1 to 65535"]),
        ('[smtp]\nlisen = ["127.0.0.1:25"]\n', ["`smtp.lisen`", "unknown key", "did you mean `smtp.listen`"]),
        ("[smtp]\nmax_message_size = -5\n", ["`smtp.max_message_size`", "greater than or equal"]),
        ('[scan.spam]\nengine = "spamkiller"\n', ["`scan.spam.engine`", "rspamd", "spamassassin"]),
        ("[smtp\n", ["not valid TOML"]),
    ],
)
def test_invalid_config_names_key_problem_and_fix(tmp_path: Path, toml: str, words: list[str]) -> None:
    path = tmp_path / "c.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as caught:
        load(path)
    for word in words:
        assert word in str(caught.value)


def test_missing_file_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load(tmp_path / "nope.toml")


def test_config_is_immutable() -> None:
    config = Config()
    with pytest.raises(ValueError):
        config.smtp.max_recipients = 5  # type: ignore[misc]


# ---------------------------------------------------------------------------- what is configured runs
def loaded(tmp_path: Path, toml: str) -> Config:
    path = tmp_path / "c.toml"
    path.write_text(toml)
    return load(path)


@pytest.mark.parametrize(
    ("toml", "order"),
    [
        ("", ["pregreet", "rdns", "helo", "size", "sender_domain", "spf", "recipients", "content"]),
        (
            '[[dnsbl.zones]]\nzone = "zen.spamhaus.org"\n[ratelimit]\n[greylist]\ndelay = 60\n',
            [
                "ratelimit", "pregreet", "dnsbl", "rdns", "helo", "size", "sender_domain", "spf", "recipients",
                "greylist", "content",
            ],
        ),
    ],
    ids=["DNS only", "with a blocklist, rate limits and greylisting"],
)  # fmt: skip
def test_without_an_order_every_check_whose_prerequisites_are_configured_runs(
    tmp_path: Path, toml: str, order: list[str]
) -> None:
    assert loaded(tmp_path, toml).check_order == order


def test_an_order_given_is_the_order_run(tmp_path: Path) -> None:
    config = loaded(tmp_path, '[checks]\norder = ["recipients", "greylist"]\n[greylist]\ndelay = 60\n')
    assert config.check_order == ["recipients", "greylist"]


@pytest.mark.parametrize(
    ("toml", "words"),
    [
        (
            '[checks]\norder = ["recipients", "size"]\n[[dnsbl.zones]]\nzone = "zen.spamhaus.org"\n',
            ['[dnsbl] is configured, but "dnsbl" is not in it', 'order = ["dnsbl", "recipients", "size"]'],
        ),
        (
            '[checks]\norder = ["recipients"]\n[greylist]\ndelay = 60\n[scan.clamd]\naddress = "/run/clamd.ctl"\n',
            ['"greylist" is not in it', '"content" is not in it', 'order = ["recipients", "greylist", "content"]'],
        ),
        ('[checks]\norder = ["recipients"]\n[pregreet]\nwait = 2\n', ['order = ["pregreet", "recipients"]']),
    ],
    ids=["a blocklist zone", "greylisting and a scanner", "the pregreet wait"],
)
def test_a_configured_section_left_out_of_the_order_is_an_error_that_names_the_fix(
    tmp_path: Path, toml: str, words: list[str]
) -> None:
    with pytest.raises(ConfigError) as caught:
        loaded(tmp_path, toml)
    message = str(caught.value)
    assert "`checks.order`" in message and "would never run" in message and "Fix:" in message
    for word in words:
        assert word in message, message


def test_the_config_make_run_writes_is_valid_and_leaves_out_the_checks_that_need_dns(tmp_path: Path) -> None:
    path = tmp_path / "var" / "mailwarden.toml"
    path.parent.mkdir()
    path.write_text(starter(2600))
    config = load(path)
    assert config.smtp.listen == ["127.0.0.1:2600"] and config.pop3.listen == ["127.0.0.1:2601"]
    assert config.pop3.allow_plaintext_auth and all(a.startswith("127.") for a in config.pop3.listen)
    assert config.path(config.store.url.removeprefix("sqlite:///")) == tmp_path / "var" / "mailwarden.db"
    assert not {"rdns", "helo", "sender_domain", "spf", "dnsbl"} & set(config.check_order)
    assert "pregreet" in config.check_order and config.pregreet.wait > 0
    assert "the checks that need DNS are left out: rdns, helo, sender_domain" in path.read_text()  # says so
