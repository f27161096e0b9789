"""benchmarks/per_record_costs.py runs end to end (no broker; nothing timed is asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "per_record_costs.py"


def test_per_record_costs_reports_each_path_and_operation() -> None:
    """A small run exits 0 and prints a figure for the hand loop, the engine with a
    no-op processor, the engine with the count as a Processor and as a BatchProcessor,
    and each single operation."""
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--records", "10000", "--repeat", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    lines = proc.stdout.splitlines()
    assert sum("µs/record" in line for line in lines) == 4, proc.stdout
    for label in (
        "hand loop",
        "engine, no-op processor",
        "engine + count",
        "as a BatchProcessor",
        "ctx.send",
    ):
        assert any(label in line for line in lines), proc.stdout
