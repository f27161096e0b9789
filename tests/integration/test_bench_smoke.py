"""The restore benchmark runs end to end on a small changelog."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from eos.testing.helpers import unique_name

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "restore.py"


def test_restore_benchmark_smoke(bootstrap: str, tmp_path: Path) -> None:
    """benchmarks/restore.py --records 2000 builds its changelog, restores it into both
    backends, exits 0 and reports records/s in its markdown table."""
    output = tmp_path / "restore.md"
    args = [sys.executable, str(BENCHMARK), "--bootstrap-servers", bootstrap]
    args += ["--records", "2000", "--topic", unique_name("bench-cl"), "--output", str(output)]
    proc = subprocess.run(
        args, capture_output=True, text=True, timeout=150, env={**os.environ}, cwd=tmp_path
    )
    print(proc.stdout)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    for backend in ("rocksdb", "memory"):
        assert re.search(rf"{backend}: 2,000 records in [\d.]+ s = [\d,]+ records/s", proc.stdout)
    table = output.read_text()
    assert "| backend | records | seconds | records/s |" in table
    assert re.search(r"\| rocksdb \| 2,000 \| [\d.]+ \| [\d,]+ \|", table)
    assert re.search(r"\| memory \| 2,000 \| [\d.]+ \| [\d,]+ \|", table)
