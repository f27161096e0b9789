"""Fixtures of the integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from apprunner import AppThread


@pytest.fixture
def app_threads() -> Iterator[list[AppThread]]:
    """Append started ``AppThread``s; all are stopped when the test ends."""
    threads: list[AppThread] = []
    yield threads
    for t in threads:
        t.app.stop()
    for t in threads:
        t.thread.join(60)
