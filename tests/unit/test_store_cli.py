"""How `mailwarden store ...` reads its arguments (cli.py)."""

from __future__ import annotations

import pytest

from mailwarden.cli import build_parser


@pytest.mark.parametrize(
    "arguments",
    [
        ["--progress", "sqlite:///a.db", "postgresql:///b"],
        ["sqlite:///a.db", "--progress", "postgresql:///b"],
        ["sqlite:///a.db", "postgresql:///b", "--progress"],
    ],
    ids=["before", "between", "after"],
)
def test_store_migrate_takes_progress_before_between_or_after_its_two_urls(arguments: list[str]) -> None:
    args = build_parser().parse_args(["store", "migrate", *arguments])
    assert (args.action, args.progress) == ("migrate", True)
    assert [args.source, args.target] == ["sqlite:///a.db", "postgresql:///b"]


def test_store_migrate_without_progress_leaves_the_choice_to_the_terminal() -> None:
    args = build_parser().parse_args(["store", "migrate", "sqlite:///a.db", "postgresql:///b", "-c", "mw.toml"])
    assert (args.progress, args.config) == (None, "mw.toml")


def test_store_migrate_with_one_url_is_refused_naming_the_missing_one(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["store", "migrate", "sqlite:///a.db"])
    assert exited.value.code == 2
    assert "the following arguments are required: TARGET_URL" in capsys.readouterr().err
