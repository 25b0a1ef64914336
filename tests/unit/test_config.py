"""The configuration: defaults, validation errors that name key/problem/fix, and its generated docs."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailwarden.config import Config, ConfigError, docs_markdown, load

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
