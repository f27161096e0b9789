"""Kafka's transaction test matrix against eos, quick mode: every cell, one fault each.

The full run (100,000 records and 5 faults per cell) is `python reliability/run.py`;
its table is in docs/reliability.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from reliability.matrix import FAULTS, run_matrix, table

pytestmark = [pytest.mark.integration, pytest.mark.cluster, pytest.mark.chaos]


def test_transaction_matrix_quick(kafka_cluster, tmp_path) -> None:
    """Copy and count pipelines (two instances each) through one of each fault: broker hard
    and clean bounce, client hard and clean bounce, the active controller killed, the
    transaction coordinator killed mid-transaction. Every committed input exactly once in
    order, no aborted input, counts 1..N, no open transaction, every instance exits 0."""
    results = run_matrix(kafka_cluster, records=2_000, faults=1, cells=FAULTS, work_dir=tmp_path)
    print(table(results))
    failed = [f"{r.fault}/{r.pipeline}" for r in results if not r.ok]
    assert not failed, failed
