"""docs/testing.md's TestDriver examples and examples/test_word_count.py run and pass."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _driver_section_blocks() -> list[str]:
    text = (ROOT / "docs" / "testing.md").read_text()
    start = text.index("## Unit tests with the TestDriver")
    end = text.index("## Testing against a real Kafka")
    return re.findall(r"```python\n(.*?)```", text[start:end], flags=re.S)


def test_the_testdriver_section_runs_as_written() -> None:
    """Every Python block of the TestDriver section runs, in order, in one namespace
    (each block calls its own test function, so its assertions are checked)."""
    blocks = _driver_section_blocks()
    assert len(blocks) >= 3
    namespace: dict[str, object] = {"__name__": "testing_md"}
    for block in blocks:
        exec(compile(block, "docs/testing.md", "exec"), namespace)


def test_the_example_test_file_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    """examples/test_word_count.py, the test file docs/testing.md points to, passes."""
    monkeypatch.syspath_prepend(str(ROOT))
    module = importlib.import_module("examples.test_word_count")
    tests = [getattr(module, n) for n in dir(module) if n.startswith("test_")]
    assert len(tests) >= 3
    for test in tests:
        test()
