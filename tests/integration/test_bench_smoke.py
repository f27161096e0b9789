"""The restore benchmark runs end to end on a small changelog."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from eos.testing.helpers import unique_name

pytestmark = [pytest.mark.integration, pytest.mark.timeout(210)]

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
    """benchmarks/run.py --records 2000 --skip-quix runs bare, bare_stateful, eos,
    eos_stateful, eos_stateful_batch, eos_windowed, eos_join and the HTTP pair (eos_sync,
    eos_async) to completion with exact outputs, writes its table with the latency section (and
    chart, when matplotlib is installed) and ends with the RATIO line, its ratios
    numbers where both contenders ran and n/a elsewhere."""
    import importlib.util

    output = tmp_path / "benchmarks.md"
    chart = tmp_path / "benchmarks.png" if importlib.util.find_spec("matplotlib") else None
    args = [sys.executable, str(RUN), "--records", "2000", "--skip-quix"]
    # A half-second latency phase pays for bare_stateful's two runs; no warm-up run.
    args += ["--sync-records", "100", "--no-async-sweep", "--latency-seconds", "0.5"]
    args += ["--no-warm-up"]
    # eos_async_sleep runs in the benchmark only: the smoke checks the HTTP pair.
    # eos_alos is eos's own contender with another guarantee: the benchmark runs it.
    contenders = ("bare", "bare_stateful", "eos", "eos_stateful", "eos_stateful_batch")
    contenders += ("eos_windowed", "eos_join")
    contenders += ("eos_sync", "eos_async")
    args += ["--contenders", ",".join(contenders)]
    args += ["--bootstrap-servers", bootstrap, "--output", str(output)]
    args += ["--chart", str(chart) if chart else "-"]
    proc = subprocess.run(
        args, capture_output=True, text=True, timeout=160, env={**os.environ}, cwd=tmp_path
    )
    print(proc.stdout[-3000:])
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("RATIO "), last
    ratios = dict(item.split("=", 1) for item in last.split()[1:])
    assert all(re.fullmatch(r"n/a|\d+\.\d\d", v) for v in ratios.values()), last
    ran = {"eos/bare", "eos_stateful/bare_stateful", "eos_stateful_batch/bare_stateful"}
    ran |= {"eos_async/eos_sync", "eos_async/ideal"}
    assert {k for k, v in ratios.items() if v != "n/a"} == ran, last
    assert {"eos/quixstreams", "eos_stateful/quixstreams_stateful", "eos_pg/bare_pg"} <= set(
        ratios
    ), last
    table = output.read_text()
    for contender in contenders:
        assert re.search(rf"^\| {contender} \| .*\| yes \|$", table, re.MULTILINE), contender
    assert "## Latency at low load" in table
    for contender in ("bare", "bare_stateful", "eos", "eos_stateful", "eos_stateful_batch"):
        row = rf"^\| {contender} \| \d+ \| \d+ \| \d+ \| (yes|NO) \| [\d,/]+ \|$"
        assert re.search(row, table, re.MULTILINE), contender
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
