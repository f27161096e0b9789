"""Profile one eos contender of run.py with py-spy and print where its CPU goes.

Runs the contender exactly as ``run.py`` measures it (same input, fresh group
and output), sampled by ``py-spy record --format raw`` (installed into this
interpreter's environment with pip if missing; needs ptrace rights), then
prints the busiest functions and lines (self time) and the inclusive time of
each function. Idle time (blocked in ``consume`` or ``commit_transaction``)
is left out unless ``--idle``.

Usage::

    python benchmarks/hot_path_profile.py --contender eos --records 200000
    python benchmarks/hot_path_profile.py --contender eos_stateful --records 200000
    python benchmarks/hot_path_profile.py --contender eos_windowed --records 200000
    python benchmarks/hot_path_profile.py --contender eos_join --records 200000
    python benchmarks/hot_path_profile.py --contender eos_async --records 200000
    python benchmarks/hot_path_profile.py --contender eos_async_sleep --records 200000
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _async import ASYNC, MAX_IN_FLIGHT, measure_async
from _harness import BENCH_DIR, DEFAULT_KEYS, Measurement, Spec, measure, prepare_input
from _http import HttpService
from _join import JOIN, measure_join, prepare_join_input
from _windowed import WINDOWED, measure_windowed, prepare_windowed_input
from contender_eos import CONTENDERS

_LINE = re.compile(r":\d+\)$")


def _ensure_py_spy() -> None:
    local = os.path.join(os.path.dirname(sys.executable), "py-spy")
    if shutil.which("py-spy") or os.path.exists(local):
        return
    print("installing py-spy ...", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "py-spy"], check=True)


def summarize(raw: Path, top: int) -> str:
    """Self time per function and per line, inclusive time per function, in % of samples."""
    by_function: collections.Counter[str] = collections.Counter()
    by_line: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        frames = stack.split(";")
        by_line[frames[-1]] += n
        by_function[_LINE.sub(")", frames[-1])] += n
        for frame in {_LINE.sub(")", f) for f in frames}:
            inclusive[frame] += n
    out = [f"{total} samples"]
    for title, counter in (
        ("self time by function", by_function),
        ("self time by line", by_line),
        ("inclusive time by function", inclusive),
    ):
        out.append(f"-- {title}")
        out += [f"{100 * v / total:5.1f}%  {k}" for k, v in counter.most_common(top)]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--contender",
        default="eos",
        choices=CONTENDERS,
    )
    parser.add_argument("--max-in-flight", type=int, default=MAX_IN_FLIGHT, help="eos_async")
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--commit-interval-ms", type=int, default=100)
    parser.add_argument("--idle", action="store_true", help="count blocked time too")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--bootstrap-servers", default=os.environ.get("EOS_BOOTSTRAP_SERVERS"))
    args = parser.parse_args(argv)
    if not args.bootstrap_servers:
        parser.error("--bootstrap-servers or EOS_BOOTSTRAP_SERVERS is required")
    _ensure_py_spy()
    raw = Path(tempfile.mkdtemp(prefix="eos-profile-")) / f"{args.contender}.raw"
    script = str(BENCH_DIR / "contender_eos.py")
    argv = [sys.executable, script, "--contender", args.contender, "--py-spy", str(raw)]
    spec = Spec(args.contender, argv)
    if args.idle:
        os.environ["PY_SPY_IDLE"] = "1"
    m: Measurement
    if args.contender in WINDOWED:
        workload, _, _ = prepare_windowed_input(args.bootstrap_servers, args.records)
        m = measure_windowed(
            spec,
            bootstrap=args.bootstrap_servers,
            workload=workload,
            commit_interval_ms=args.commit_interval_ms,
            run_id=uuid.uuid4().hex[:6],
            timeout_s=max(120.0, args.records / 2000),
        )
    elif args.contender in JOIN:
        join, _, _ = prepare_join_input(args.bootstrap_servers, args.records)
        m = measure_join(
            spec,
            bootstrap=args.bootstrap_servers,
            workload=join,
            commit_interval_ms=args.commit_interval_ms,
            run_id=uuid.uuid4().hex[:6],
            timeout_s=max(120.0, args.records / 2000),
        )
    elif args.contender in ASYNC:
        if args.contender == "eos_sync":
            args.records = min(args.records, 2000)  # ~190 records/s
        topic, _, _ = prepare_input(args.bootstrap_servers, args.records, DEFAULT_KEYS)
        with HttpService() as service:
            m = measure_async(
                spec,
                bootstrap=args.bootstrap_servers,
                topic=topic,
                records=args.records,
                service_url=service.url,
                max_in_flight=1 if args.contender == "eos_sync" else args.max_in_flight,
                commit_interval_ms=args.commit_interval_ms,
                latency_seconds=0,
                run_id=uuid.uuid4().hex[:6],
            )
    else:
        topic, _, _ = prepare_input(args.bootstrap_servers, args.records, DEFAULT_KEYS)
        m = measure(
            spec,
            bootstrap=args.bootstrap_servers,
            backlog_topic=topic,
            records=args.records,
            commit_interval_ms=args.commit_interval_ms,
            latency_seconds=1.0,
            run_id=uuid.uuid4().hex[:6],
            timeout_s=max(120.0, args.records / 2000),
        )
    print(
        f"{m.contender}: {m.records_per_s:,.0f} records/s while sampled "
        f"(the sampler costs some); process CPU {m.extra.get('cpu_s', 0):.2f} s"
    )
    print(summarize(raw, args.top))
    print(f"raw samples: {raw}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
