"""docs/time.md's code runs as written, and the names it documents exist."""

from __future__ import annotations

import re
from pathlib import Path

import eos
from eos import metrics
from eos.config import LATE_RECORD_POLICIES
from eos.properties import PROPERTY_FIELDS

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "time.md"


def _python_blocks(path: Path) -> list[str]:
    """The file's Python blocks, each padded with blank lines so that a traceback's
    line numbers are the document's."""
    text = path.read_text()
    return [
        "\n" * text.count("\n", 0, m.start(1)) + m.group(1)
        for m in re.finditer(r"```python\n(.*?)```", text, flags=re.S)
    ]


def test_every_python_block_of_time_md_runs_in_order() -> None:
    """Every Python block of docs/time.md runs, in order, in one namespace; each
    block asserts what the text around it claims (timers, punctuation, the window
    pictures, lateness, session retractions, the window store, TimerError)."""
    blocks = _python_blocks(DOC)
    assert len(blocks) >= 9
    namespace: dict[str, object] = {"__name__": "time_md"}
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), namespace)


def test_the_names_time_md_documents_exist() -> None:
    """The metrics, the late-record setting and the window types that time.md,
    monitoring.md and configuration.md name are the code's."""
    text = DOC.read_text()
    monitoring = (ROOT / "docs" / "monitoring.md").read_text()
    for name in ("eos_late_records_total", "eos_timers_fired_total"):
        assert name in text
        assert f"| `{name}` | counter |" in monitoring
        assert name in metrics.METRIC_NAMES
    configuration = (ROOT / "docs" / "configuration.md").read_text()
    assert "| `late_record_policy` | `late.record.policy` |" in configuration
    assert set(LATE_RECORD_POLICIES) == {"skip", "dead_letter"}
    assert PROPERTY_FIELDS["late.record.policy"] == "late_record_policy"
    for name in ("TumblingWindows", "HoppingWindows", "SlidingWindows", "SessionWindows"):
        assert f"eos.{name}(" in text or f"`{name}(" in text
        assert name in eos.__all__
    for name in ("Windowed", "WindowStore", "WindowedGroupedStream", "WindowedTable"):
        assert name in eos.__all__


def test_dsl_md_windows_section_runs() -> None:
    """The windowed example of docs/dsl.md runs and emits what it says."""
    text = (ROOT / "docs" / "dsl.md").read_text()
    section = text[text.index("## Windows") :]
    section = section[: section.index("\n## ", 1)]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1
    exec(compile(blocks[0], "docs/dsl.md", "exec"), {"__name__": "dsl_md"})
