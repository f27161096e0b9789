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


RUN = BENCHMARK.parent / "run.py"


def test_run_benchmark_smoke(bootstrap: str, tmp_path: Path) -> None:
    """benchmarks/run.py --records 2000 --skip-quix runs bare, eos, eos_alos,
    eos_stateful, eos_windowed, eos_join and the HTTP pair (eos_sync, eos_async) to
    completion with exact outputs, writes its table (and chart, when
    matplotlib is installed) and ends with the RATIO line."""
    import importlib.util

    output = tmp_path / "benchmarks.md"
    chart = tmp_path / "benchmarks.png" if importlib.util.find_spec("matplotlib") else None
    args = [sys.executable, str(RUN), "--records", "2000", "--skip-quix"]
    args += ["--sync-records", "100", "--no-async-sweep"]
    # eos_async_sleep runs in the benchmark only: the smoke checks the HTTP pair.
    contenders = ("bare", "eos", "eos_alos", "eos_stateful", "eos_windowed", "eos_join")
    contenders += ("eos_sync", "eos_async")
    args += ["--contenders", ",".join(contenders)]
    args += ["--bootstrap-servers", bootstrap, "--output", str(output)]
    args += ["--chart", str(chart) if chart else "-"]
    proc = subprocess.run(
        args, capture_output=True, text=True, timeout=120, env={**os.environ}, cwd=tmp_path
    )
    print(proc.stdout[-3000:])
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert re.fullmatch(
        r"RATIO eos/bare=\d+\.\d\d eos/quixstreams=n/a "
        r"eos_stateful/quixstreams_stateful=n/a eos/eos_alos=\d+\.\d\d"
        r" eos_windowed/quixstreams_windowed=n/a eos_join/quixstreams_join=n/a"
        r" eos_async/eos_sync=\d+\.\d\d eos_async/ideal=\d+\.\d\d eos_pg/bare_pg=n/a",
        last,
    ), last
    table = output.read_text()
    for contender in contenders:
        assert re.search(rf"^\| {contender} \| .*\| yes \|$", table, re.MULTILINE), contender
    assert "outputs not exactly one per input" not in proc.stderr
    if chart is not None:
        assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_run_benchmark_postgres_smoke(bootstrap: str, postgres_dsn: str, tmp_path: Path) -> None:
    """benchmarks/run.py --contenders bare_pg,eos_pg on 2,000 records writes exactly one row per
    record for both, ends with eos_pg/bare_pg in the RATIO line, and replaces only the
    PostgreSQL section of an existing report."""
    output = tmp_path / "benchmarks.md"
    output.write_text(
        "# kept\n\n<!-- postgres:begin -->\nstale\n<!-- postgres:end -->\n\nkept too\n"
    )
    args = [sys.executable, str(RUN), "--contenders", "bare_pg,eos_pg", "--pg-records", "2000"]
    args += ["--repeat", "1", "--bootstrap-servers", bootstrap]
    args += ["--output", str(output), "--chart", "-"]
    proc = subprocess.run(
        args,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "EOS_POSTGRES_DSN": postgres_dsn},
        cwd=tmp_path,
    )
    print(proc.stdout[-3000:])
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert re.fullmatch(
        r"RATIO eos/bare=n/a .* eos_async/ideal=n/a eos_pg/bare_pg=\d+\.\d\d", last
    ), last
    report = output.read_text()
    assert report.startswith("# kept\n\n<!-- postgres:begin -->\n"), report[:200]
    assert report.endswith("<!-- postgres:end -->\n\nkept too\n"), report[-200:]
    assert "stale" not in report
    for contender in ("bare_pg", "eos_pg"):
        row = rf"^\| {contender} \| .* \| [\d,]+ \| [\d.]+ \| .* \| yes \|$"
        assert re.search(row, report, re.MULTILINE), contender
        assert re.search(rf"^\| \d \| {contender} \| .* \| 2,000/2,000 \|$", report, re.MULTILINE)
