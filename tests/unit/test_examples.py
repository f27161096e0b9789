"""The examples' processors, run through the TestDriver (no broker)."""

from __future__ import annotations

import importlib.util
import random
import sys
import time
from collections import Counter
from pathlib import Path
from types import ModuleType

import pytest

from eos.testing import TestDriver

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"examples_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


count_per_key = _load("count_per_key")


@pytest.mark.parametrize("backend", ["rocksdb", "memory"])
def test_count_per_key_emits_running_counts_and_stores_totals(backend: str) -> None:
    """CountPerKey sends 1..n per key in input order and its store ends at the true counts."""
    rng = random.Random(3)
    keys = [f"k{rng.randrange(50)}" for _ in range(2_000)]
    started = time.perf_counter()
    driver = TestDriver(
        count_per_key.CountPerKey("counts-out", backend),
        key_serde="string",
        value_serde="string",
        partitions=4,
    )
    for i, key in enumerate(keys):
        driver.send(f"v{i}", key=key)
    pairs = driver.output_pairs("counts-out")
    store = driver.store("counts")
    elapsed = time.perf_counter() - started
    print(f"{backend}: {len(keys)} records, {len(store)} keys in {elapsed * 1000:.0f} ms")

    seen: Counter[str] = Counter()
    expected = []
    for key in keys:
        seen[key] += 1
        expected.append((key, str(seen[key])))
    assert pairs == expected
    assert store == dict(seen)
    assert driver.topics() == ["counts-out"]
    assert elapsed < 1.0


def test_count_per_key_declares_the_chosen_backend() -> None:
    """The backend argument reaches the store declaration the engine reads."""
    assert [(s.name, s.backend) for s in count_per_key.CountPerKey("o").stores] == [
        ("counts", "rocksdb")
    ]
    assert [s.backend for s in count_per_key.CountPerKey("o", "memory").stores] == ["memory"]
