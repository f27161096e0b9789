"""`eos run`: the instance ids of workers, and signals before the application is imported."""

from __future__ import annotations

import pytest

import eos.runner
from eos.runner import run


def test_workers_take_their_ids_from_instance_id(monkeypatch: pytest.MonkeyPatch) -> None:
    """`eos run --workers 2 --instance-id X` runs workers X-0 and X-1, not <config id>-0/1:
    two hosts with different X never share a transactional id."""
    seen: dict[str, object] = {}

    def supervise(target: str, **kwargs: object) -> int:
        seen.update(kwargs)
        return 0

    monkeypatch.setattr(eos.runner, "supervise", supervise)
    assert run("examples.order_enrichment:app", workers=2, instance_id="host-b") == 0
    assert seen["base_instance_id"] == "host-b"
    assert seen["workers"] == 2
