"""Shared fixtures. Integration tests run real servers on loopback; see tests/support/."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.mailwarden import Mailwarden, running


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Mailwarden]:
    """A running mailwarden with the local domain example.test and the mailbox bob@example.test."""
    with running(tmp_path / "mw") as instance:
        yield instance
