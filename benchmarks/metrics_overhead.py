"""Benchmark: what Prometheus metrics cost eos (exactly_once_v2, stateless).

The same contender as ``run.py``'s ``eos`` (``value.upper()``), with metrics
off, and on: ``metrics_registry=CollectorRegistry()`` plus a scrape
(``generate_latest``) every ``--scrape-interval-s`` on another thread, as a
Prometheus server would do, only more often. Same input, fresh group and
output per run, alternating the order; the ratio of the median records/s is
printed last::

    RATIO metrics_on/metrics_off=0.99

The target is within 3% (0.97 or more): the engine counts per batch and per
commit, never per record, and a scrape reads those counters.

Usage::

    python benchmarks/metrics_overhead.py                 # 500,000 records, 4 pairs
    python benchmarks/metrics_overhead.py --records 20000 --repeat 1   # smoke
"""

from __future__ import annotations

import argparse
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import BENCH_DIR, DEFAULT_KEYS, Spec, measure, median, prepare_input

TARGET = 0.97


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=500_000)
    parser.add_argument("--repeat", type=int, default=4, help="pairs of runs (off, on)")
    parser.add_argument("--commit-interval-ms", type=int, default=100)
    parser.add_argument("--scrape-interval-s", type=float, default=1.0)
    parser.add_argument("--bootstrap-servers", help="default: EOS_BOOTSTRAP_SERVERS or start one")
    args = parser.parse_args(argv)

    cluster = None
    bootstrap = args.bootstrap_servers
    if not bootstrap:
        from eos.testing.kafka import start_kafka

        cluster = start_kafka(1)
        bootstrap = cluster.bootstrap_servers
    base = [sys.executable, str(BENCH_DIR / "contender_eos.py"), "--contender", "eos"]
    off = Spec("metrics_off", base)
    on = Spec(
        "metrics_on", [*base, "--metrics", "--scrape-interval-s", str(args.scrape_interval_s)]
    )
    rates: dict[str, list[float]] = {"metrics_off": [], "metrics_on": []}
    try:
        topic, reused, seconds = prepare_input(bootstrap, args.records, DEFAULT_KEYS)
        print(f"input {topic}: {'reused' if reused else f'produced in {seconds:.1f} s'}")
        run_id = uuid.uuid4().hex[:6]
        for rep in range(args.repeat):
            for spec in (off, on) if rep % 2 == 0 else (on, off):
                m = measure(
                    spec,
                    bootstrap=bootstrap,
                    backlog_topic=topic,
                    records=args.records,
                    commit_interval_ms=args.commit_interval_ms,
                    latency_seconds=1.0,
                    run_id=f"{run_id}-{rep}",
                    timeout_s=max(120.0, args.records / 2000),
                )
                rates[spec.name].append(m.records_per_s)
                print(
                    f"[{rep + 1}/{args.repeat}] {spec.name}: {m.records_per_s:,.0f} records/s, "
                    f"p50 {m.latency_p50_ms:.0f} ms, peak RSS {m.maxrss_mib:.0f} MiB",
                    flush=True,
                )
    finally:
        if cluster is not None:
            cluster.stop()
    ratio = median(rates["metrics_on"]) / median(rates["metrics_off"])
    verdict = "within" if ratio >= TARGET else "NOT within"
    print(
        f"median records/s: off {median(rates['metrics_off']):,.0f}, "
        f"on {median(rates['metrics_on']):,.0f}; {verdict} {100 * (1 - TARGET):.0f}%"
    )
    print(f"RATIO metrics_on/metrics_off={ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
