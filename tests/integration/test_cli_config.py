"""`mailwarden config check`: the operator learns of every problem before the server starts."""

from __future__ import annotations

from pathlib import Path

from tests.support.mailwarden import Mailwarden


def test_config_check_accepts_a_valid_file_and_warns_that_postmaster_would_be_refused(tmp_path: Path) -> None:
    instance = Mailwarden(tmp_path / "mw")
    done = instance.cli("config", "check")
    assert done.returncode == 0
    assert "configuration OK" in done.stdout
    assert "postmaster@ of example.test would be refused" in done.stdout
    assert "RFC 5321 4.5.1" in done.stdout


def test_config_check_is_quiet_about_postmaster_once_a_postmaster_mailbox_exists(tmp_path: Path) -> None:
    instance = Mailwarden(tmp_path / "mw")
    instance.add_user("postmaster@example.test")
    done = instance.cli("config", "check")
    assert done.returncode == 0
    assert "postmaster" not in done.stdout


def test_config_check_names_the_key_the_problem_and_the_fix_and_exits_2(tmp_path: Path) -> None:
    instance = Mailwarden(tmp_path / "mw", {"smtp": {"max_recipients": 0}})
    done = instance.cli("config", "check", check=False)
    assert done.returncode == 2
    assert "`smtp.max_recipients`" in done.stderr
    assert "greater than or equal to 1" in done.stderr
    assert "Fix:" in done.stderr
    assert "Traceback" not in done.stderr


def test_config_check_refuses_an_unknown_check_name(tmp_path: Path) -> None:
    instance = Mailwarden(tmp_path / "mw", {"checks": {"order": ["recipients", "virsu"]}})
    done = instance.cli("config", "check", check=False)
    assert done.returncode == 2
    assert "unknown check 'virsu'" in done.stderr


def test_a_configured_section_left_out_of_the_order_stops_config_check_and_the_start(tmp_path: Path) -> None:
    instance = Mailwarden(tmp_path / "mw", {"greylist": {"delay": 60}})  # the base order has no greylist
    for command in (("config", "check"), ("serve",)):
        done = instance.cli(*command, check=False)
        assert done.returncode == 2, command
        assert '[greylist] is configured, but "greylist" is not in it' in done.stderr
        assert 'Fix: order = ["recipients", "size", "greylist", "content"]' in done.stderr
        assert "Traceback" not in done.stderr
