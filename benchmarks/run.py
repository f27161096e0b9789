"""Benchmark: eos against a bare confluent-kafka loop, at-least-once and quixstreams.

Contenders (stateless ``value.upper()``; stateful count per key; windowed
count per key and 60 s tumbling window, final results only; join: orders
enriched with their customer's tier from a customers table):

- ``bare``: a minimal hand-written exactly-once loop on confluent-kafka
  (consume a batch, produce, send offsets, commit every commit interval);
- ``eos`` (exactly_once_v2), ``eos_alos`` (at_least_once), ``eos_stateful``,
  ``eos_stateful_batch`` (the same count as an ``eos.BatchProcessor``),
  ``eos_windowed``, ``eos_join`` (stream-table join);
- ``quixstreams``, ``quixstreams_stateful``, ``quixstreams_windowed``,
  ``quixstreams_join`` (``join_asof``) (exactly-once), installed into their own
  virtualenv ``benchmarks/.venv-quix`` (made on first use);
- ``kafka_streams``, ``kafka_streams_stateful``: Kafka Streams (exactly_once_v2, one
  stream thread, no record cache), a Java app built on first use with Maven and
  javac against the broker's version of kafka-streams (``_kafka_streams.py``;
  ``--skip-kafka-streams``, or skipped with a note without a JDK and Maven);
- ``eos_sync`` and ``eos_async``: an HTTP call per record to a service with a
  fixed 5 ms latency (``_http.py``, started by this run in its own process),
  from a synchronous ``eos.Processor`` and from an ``eos.AsyncProcessor`` with
  max_in_flight 200; ``eos_async_sleep``: eos_async with the call replaced by
  a 5 ms ``asyncio.sleep`` (the engine without an HTTP stack) (``_async.py``).
  ``eos_sync`` reads a smaller input of its own (``--sync-records``). The full
  run also sweeps ``eos_async``'s max_in_flight (1 to 400) and writes
  ``docs/benchmarks-async.png`` (``--async-sweep`` in a ``--quick`` run,
  ``--no-async-sweep`` to skip it).

The inputs are produced once per run (or reused from an earlier run when the
topic already holds exactly them): one for the windowed contenders, with event
timestamps (``_windowed.py``), an orders and a customers topic for the join
contenders (``_join.py``), one for the others. Each contender run is measured
by ``_harness.measure`` (throughput on the backlog, then latency at a fixed
rate; see there; an unmeasured run of ``bare`` goes first, ``--no-warm-up``
to skip it), windowed by ``_windowed.measure_windowed`` (throughput, and
every final count checked against the input), join by ``_join.measure_join``
(throughput, and every joined order checked). Writes
``docs/benchmarks.md`` and ``docs/benchmarks.png`` (a ``--quick`` run: the same
files in ``benchmarks/out/quick/``, which git ignores, so that only a full run
publishes; ``--output``/``--chart`` name others) and ends with one line of
throughput ratios, ``n/a`` where a contender did not run (one line in the
output, wrapped here)::

    RATIO eos/bare=0.93 eos/quixstreams=2.40
          eos_stateful/quixstreams_stateful=2.10 eos/eos_alos=0.88
          eos_windowed/quixstreams_windowed=2.20 eos_join/quixstreams_join=2.00
          eos_async/eos_sync=110.00 eos_async/ideal=0.55

``eos_async/ideal`` is eos_async's records/s over max_in_flight / latency
(200 / 5 ms = 40,000/s). A run of the async contenders only (``--contenders
eos_sync,eos_async``) replaces only the async section of an existing
``--output`` (between its ``<!-- async:begin -->`` and ``<!-- async:end -->``
lines) and leaves ``docs/benchmarks.png`` alone.

``bare_pg`` and ``eos_pg`` (``_postgres.py``) write one PostgreSQL row per
record: a hand-written psycopg loop (the limit) and eos's ``PostgresProcessor``,
over an input of their own (``--pg-records``), into a PostgreSQL this run
starts (``eos.testing.postgres``; ``EOS_POSTGRES_DSN`` names one to use
instead). The RATIO line ends with ``eos_pg/bare_pg=``. Their section of the
report lies between ``<!-- postgres:begin -->`` and ``<!-- postgres:end -->``;
a run of them alone replaces only that section of an existing ``--output``.

Usage::

    python benchmarks/run.py                     # 1,000,000 records, 2 repetitions
    python benchmarks/run.py --quick             # 200,000 records, 1 repetition (5 for the
                                                 # close pairs), not published
    python benchmarks/run.py --records 2000 --skip-quix --output /tmp/b.md   # smoke
    python benchmarks/run.py --contenders eos_sync,eos_async   # the async section only
    python benchmarks/run.py --contenders bare_pg,eos_pg       # the PostgreSQL section only
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import shlex
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _kafka_streams
import _report
import _report_sections
from _async import ASYNC, MAX_IN_FLIGHT, SweepPoint, measure_async, sweep
from _harness import (
    BENCH_DIR,
    DEFAULT_KEYS,
    LATENCY_RATE,
    LOG_DIR,
    ROOT,
    Measurement,
    Spec,
    measure,
    prepare_input,
)
from _http import LATENCY_MS, HttpService
from _join import JOIN, JoinInput, measure_join, prepare_join_input
from _kafka_streams import KAFKA_STREAMS
from _postgres import PG, PgInput, measure_pg, pg_spec, postgres, prepare_pg_input
from _windowed import WINDOWED, WindowedInput, measure_windowed, prepare_windowed_input

QUIX_VENV = BENCH_DIR / ".venv-quix"
CLOSE_PAIRS = ("bare", "eos", "bare_stateful", "eos_stateful", "eos_stateful_batch")
"""The contenders of the RATIO line's first three ratios, eos/bare,
eos_stateful/bare_stateful and eos_stateful_batch/bare_stateful: close to their
targets, unlike the others (several times apart), so a quick run measures them
:data:`QUICK_CLOSE_REPEAT` times."""
QUICK_CLOSE_REPEAT = 5
"""A quick run's repetitions of :data:`CLOSE_PAIRS` (the rest run once): on this 2-core
machine one pair of 2-second runs put the same code's eos_stateful/bare_stateful anywhere
from 0.66 to 1.14 within an hour, and one contender's 2-second runs minutes apart differ by
up to a third (``bare_stateful``: 101,689 to 139,654 records/s in one quick run); the median
of five, in alternating order, is steadier than one run or three."""
QUICK_DIR = LOG_DIR / "quick"
"""Where a ``--quick`` run writes its report and charts (``benchmarks/out/`` is git-ignored)."""
QUIX_REQUIREMENT = "quixstreams>=3,<4"
EOS_CONTENDERS = (
    "bare",
    "bare_stateful",
    "eos",
    "eos_alos",
    "eos_stateful",
    "eos_stateful_batch",
    "eos_windowed",
    "eos_join",
)
QUIX_CONTENDERS = (
    "quixstreams",
    "quixstreams_stateful",
    "quixstreams_windowed",
    "quixstreams_join",
)
ORDER = (
    "bare",
    "eos",
    "eos_alos",
    "quixstreams",
    "kafka_streams",
    "bare_stateful",
    "eos_stateful",
    "eos_stateful_batch",
    "quixstreams_stateful",
    "kafka_streams_stateful",
    "eos_windowed",
    "quixstreams_windowed",
    "eos_join",
    "quixstreams_join",
    *ASYNC,
    *PG,
)


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def quix_python() -> tuple[Path | None, str]:
    """The quixstreams virtualenv's interpreter (created on first use), and a note."""
    python = QUIX_VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {QUIX_VENV} and installing {QUIX_REQUIREMENT} ...", flush=True)
        steps = [
            [sys.executable, "-m", "venv", str(QUIX_VENV)],
            [str(python), "-m", "pip", "install", "-q", QUIX_REQUIREMENT],
        ]
        for step in steps:
            proc = subprocess.run(step, capture_output=True, text=True)
            if proc.returncode != 0:
                reason = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
                return None, f"could not be installed ({reason[0]}); its ratios are n/a"
    proc = subprocess.run(
        [str(python), "-W", "ignore", "-c", "from importlib.metadata import version as v; "
         "import quixstreams; print(v('quixstreams'), v('confluent-kafka'))"],
        capture_output=True, text=True,
    )  # fmt: skip
    if proc.returncode != 0:
        return None, f"cannot be imported ({proc.stderr.strip()[-200:]}); its ratios are n/a"
    quix, ck = proc.stdout.split()
    return python, (
        f"quixstreams {quix} on its own confluent-kafka {ck}; `commit_interval` and "
        "`consumer_poll_timeout` set to the commit interval (see contender_quix.py), "
        "defaults otherwise"
    )


def versions() -> str:
    from importlib.metadata import version

    import confluent_kafka

    return (
        f"Python {sys.version.split()[0]}, eos {version('eos-kafka')}, confluent-kafka "
        f"{version('confluent-kafka')} (librdkafka {confluent_kafka.libversion()[0]}), "
        f"rocksdict {version('rocksdict')}"
    )


def warm_up(bootstrap: str, topic: str, records: int, commit_interval_ms: int, run_id: str) -> None:
    """One unmeasured run of ``bare`` over the input, before the first measured contender.

    On a fresh broker and a just-written input the first contender of a run was
    up to 45% slower than the same contender later in it (``--quick``, one
    repetition: bare first 184,000 records/s, last 330,000), which made a
    one-repetition ratio a measure of the order.
    """
    argv = [sys.executable, str(BENCH_DIR / "contender_eos.py"), "--contender", "bare"]
    m = measure(
        Spec("warm-up", argv),
        bootstrap=bootstrap,
        backlog_topic=topic,
        records=records,
        commit_interval_ms=commit_interval_ms,
        latency_seconds=0,
        run_id=run_id,
        timeout_s=max(120.0, records / 2000),
    )
    print(f"warm-up (bare, not measured): {m.records_per_s:,.0f} records/s", flush=True)


def specs(
    names: list[str], quix: Path | None, kafka_streams: list[str] | None = None
) -> list[Spec]:
    out = []
    for name in names:
        if name in KAFKA_STREAMS:
            if kafka_streams is not None:  # else not built: skipped
                out.append(Spec(name, [*kafka_streams, "--contender", name]))
            continue
        if name in PG:
            out.append(pg_spec(name))
            continue
        if name in QUIX_CONTENDERS:
            if quix is None:
                continue
            argv = [str(quix), str(BENCH_DIR / "contender_quix.py"), "--contender", name]
        else:
            argv = [sys.executable, str(BENCH_DIR / "contender_eos.py"), "--contender", name]
        out.append(Spec(name, argv))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="200,000 records, 1 repetition (3 for bare, eos and the stateful ones)",
    )
    parser.add_argument("--records", type=int, help="default 1,000,000 (--quick: 200,000)")
    parser.add_argument("--repeat", type=int, help="default 2 (--quick: 1)")
    parser.add_argument("--commit-interval-ms", type=int, default=100)
    parser.add_argument("--keys", type=int, default=DEFAULT_KEYS)
    parser.add_argument(
        "--latency-seconds", type=float, help="paced phase length (default: records/20,000, 1-10)"
    )
    parser.add_argument("--bootstrap-servers", help="default: EOS_BOOTSTRAP_SERVERS or start one")
    parser.add_argument("--skip-quix", action="store_true", help="no quixstreams contenders")
    parser.add_argument(
        "--skip-kafka-streams", action="store_true", help="no Kafka Streams contenders"
    )
    parser.add_argument("--contenders", default=",".join(ORDER), help="comma-separated subset")
    parser.add_argument(
        "--output", help=f"default docs/benchmarks.md (--quick: {_rel(QUICK_DIR)}/); '-': none"
    )
    parser.add_argument(
        "--chart", help=f"default docs/benchmarks.png (--quick: {_rel(QUICK_DIR)}/); '-': none"
    )
    parser.add_argument("--sync-records", type=int, help="eos_sync's input (default 2,000)")
    parser.add_argument(
        "--async-sweep",
        action=argparse.BooleanOptionalAction,
        help="sweep eos_async's max_in_flight (default: yes, except with --quick)",
    )
    parser.add_argument(
        "--sweep-seconds", type=float, help="per sweep point at the ideal rate (default 5; quick 2)"
    )
    parser.add_argument(
        "--pg-records", type=int, help="bare_pg and eos_pg's input (default 100,000; quick 20,000)"
    )
    parser.add_argument("--pg-profile", help="cProfile each PostgreSQL contender run into this dir")
    parser.add_argument(
        "--warm-up",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="an unmeasured run of bare over the input first (default: yes)",
    )
    args = parser.parse_args(argv)
    # Only a full run publishes: a quick run's small, noisy figures go where git ignores them.
    report_dir = QUICK_DIR if args.quick else ROOT / "docs"
    args.output = args.output or str(report_dir / "benchmarks.md")
    args.chart = args.chart or str(report_dir / "benchmarks.png")
    records = args.records or (200_000 if args.quick else 1_000_000)
    pg_records = args.pg_records or (20_000 if args.quick else 100_000)
    repeat = args.repeat or (1 if args.quick else 2)
    close_repeat = max(repeat, QUICK_CLOSE_REPEAT if args.quick and not args.repeat else 0)
    latency_seconds = args.latency_seconds or min(10.0, max(1.0, records / 20_000))
    names = [n.strip() for n in args.contenders.split(",") if n.strip()]
    unknown = set(names) - set(ORDER)
    if unknown:
        parser.error(f"unknown contenders {sorted(unknown)}; known: {', '.join(ORDER)}")
    sync_records = args.sync_records or 2_000
    run_sweep = "eos_async" in names and (
        args.async_sweep if args.async_sweep is not None else not args.quick
    )
    sweep_seconds = args.sweep_seconds or (2.0 if args.quick else 5.0)
    wall = time.monotonic()

    quix: Path | None = None
    quix_note = "skipped (--skip-quix); its ratios are n/a"
    if not args.skip_quix and set(names) & set(QUIX_CONTENDERS):
        quix, quix_note = quix_python()
        print(f"quixstreams: {quix_note}", flush=True)
    kafka_streams: list[str] | None = None
    kafka_streams_note = ""  # none: no Kafka Streams contender asked for
    if set(names) & set(KAFKA_STREAMS):
        kafka_streams_note = "skipped (--skip-kafka-streams); its ratios are n/a"
        if not args.skip_kafka_streams:
            kafka_streams, kafka_streams_note = _kafka_streams.build()
        print(f"kafka_streams: {kafka_streams_note}", flush=True)

    cluster = None
    bootstrap = args.bootstrap_servers
    if bootstrap:
        broker = f"external, {bootstrap}"
    else:
        from eos.testing.kafka import KAFKA_VERSION, start_kafka

        cluster = start_kafka(1)
        bootstrap = cluster.bootstrap_servers
        broker = (
            f"external, {bootstrap}"
            if os.environ.get("EOS_BOOTSTRAP_SERVERS")
            else f"Kafka {KAFKA_VERSION}, one KRaft node on this machine"
        )
    service: HttpService | None = None
    sweep_points: list[SweepPoint] = []
    database = contextlib.ExitStack()
    dsn, server = "", ""
    try:
        runs = specs(names, quix, kafka_streams)
        if any(spec.name in PG for spec in runs):
            from eos.testing.postgres import PostgresSetupError

            try:
                dsn, server = database.enter_context(postgres())
                print(f"database: {server}", flush=True)
            except PostgresSetupError as exc:
                print(f"no PostgreSQL, so no {', '.join(PG)}: {exc}", file=sys.stderr, flush=True)
                runs = [spec for spec in runs if spec.name not in PG]
                if not runs:
                    return 1
        topic = ""
        if any(spec.name not in (*WINDOWED, *JOIN, *PG, "eos_sync") for spec in runs):
            topic, reused, seconds = prepare_input(bootstrap, records, args.keys)
            made = "reused" if reused else f"produced in {seconds:.1f} s"
            print(f"input {topic}: {made}", flush=True)
        windowed: WindowedInput | None = None
        if any(spec.name in WINDOWED for spec in runs):
            windowed, reused, seconds = prepare_windowed_input(bootstrap, records)
            made = "reused" if reused else "produced"
            print(
                f"windowed input {windowed.topic}: {made}, {len(windowed.expected):,} closed "
                f"(key, window) counts expected ({seconds:.1f} s)",
                flush=True,
            )
        join: JoinInput | None = None
        if any(spec.name in JOIN for spec in runs):
            join, reused, seconds = prepare_join_input(bootstrap, records)
            made = "reused" if reused else f"produced in {seconds:.1f} s"
            print(f"join input {join.orders} and {join.customers}: {made}", flush=True)
        sync_topic = ""
        if "eos_sync" in names:
            sync_topic, reused, seconds = prepare_input(bootstrap, sync_records, args.keys)
            made = "reused" if reused else f"produced in {seconds:.1f} s"
            print(f"eos_sync input {sync_topic}: {made}", flush=True)
        pg_input: PgInput | None = None
        if any(spec.name in PG for spec in runs):
            pg_input, reused, seconds = prepare_pg_input(bootstrap, pg_records, args.keys)
            made = "reused" if reused else "produced"
            print(f"PostgreSQL input {pg_input.topic}: {made} ({seconds:.1f} s)", flush=True)
        if any(spec.name in ASYNC for spec in runs):
            service = HttpService().start()
            print(f"HTTP service at {service.url} (on {service.loop})", flush=True)
        results: list[Measurement] = []
        run_id = uuid.uuid4().hex[:6]
        if args.warm_up and topic:
            warm_up(bootstrap, topic, records, args.commit_interval_ms, run_id)

        def measure_one(spec: Spec, rep: int) -> Measurement:
            if spec.name in ASYNC:
                assert service is not None
                sync = spec.name == "eos_sync"
                return measure_async(
                    spec,
                    bootstrap=bootstrap,
                    topic=sync_topic if sync else topic,
                    records=sync_records if sync else records,
                    service_url=service.url,
                    max_in_flight=1 if sync else MAX_IN_FLIGHT,
                    commit_interval_ms=args.commit_interval_ms,
                    # eos_sync's capacity (~190/s) is below the paced rate.
                    latency_seconds=0 if sync else latency_seconds,
                    run_id=f"{run_id}-{rep}",
                )
            elif spec.name in WINDOWED or spec.name in JOIN:
                # Each with a workload of its own, measured the same way.
                if spec.name in WINDOWED:
                    assert windowed is not None
                    measure_workload: Any = functools.partial(measure_windowed, workload=windowed)
                else:
                    assert join is not None
                    measure_workload = functools.partial(measure_join, workload=join)
                return measure_workload(  # type: ignore[no-any-return]
                    spec,
                    bootstrap=bootstrap,
                    commit_interval_ms=args.commit_interval_ms,
                    run_id=f"{run_id}-{rep}",
                    timeout_s=max(120.0, records / 2000),
                )
            elif spec.name in PG:
                assert pg_input is not None
                return measure_pg(
                    spec,
                    bootstrap=bootstrap,
                    dsn=dsn,
                    workload=pg_input,
                    commit_interval_ms=args.commit_interval_ms,
                    run_id=f"{run_id}-{rep}",
                    timeout_s=max(120.0, pg_records / 200),
                    profile_dir=Path(args.pg_profile) if args.pg_profile else None,
                )
            else:
                return measure(
                    spec,
                    bootstrap=bootstrap,
                    backlog_topic=topic,
                    records=records,
                    commit_interval_ms=args.commit_interval_ms,
                    latency_seconds=latency_seconds,
                    run_id=f"{run_id}-{rep}",
                    timeout_s=max(120.0, records / 2000),
                )

        # (rep, spec) in the order they run: the repetitions alternate the order; a quick
        # run repeats the close pairs (see CLOSE_PAIRS) alone, after the rest.
        schedule = [
            (rep, spec)
            for rep in range(repeat)
            for spec in (runs if rep % 2 == 0 else list(reversed(runs)))
        ]
        close = [spec for spec in runs if spec.name in CLOSE_PAIRS]
        for rep in range(repeat, close_repeat):
            schedule += [(rep, spec) for spec in (close if rep % 2 == 0 else close[::-1])]
        for rep, spec in schedule:
            m = measure_one(spec, rep)
            results.append(m)
            runs_of = close_repeat if spec.name in CLOSE_PAIRS else repeat
            print(
                f"[{rep + 1}/{runs_of}] {m.contender}: {m.records_per_s:,.0f} records/s "
                f"({m.seconds:.2f} s), latency p50 {_report.ms(m.latency_p50_ms)} ms "
                f"p99 {_report.ms(m.latency_p99_ms)} ms, peak RSS {m.maxrss_mib:.0f} MiB, "
                f"CPU {_report.cpu_per_output(m)} µs/output, "
                f"outputs {m.outputs:,}/{m.expected_outputs:,}"
                + (f", {m.wrong:,} wrong" if m.wrong else ""),
                flush=True,
            )
        if run_sweep:
            assert service is not None
            sweep_points = sweep(
                [spec for spec in runs if spec.name in ("eos_async", "eos_async_sleep")],
                bootstrap=bootstrap,
                service_url=service.url,
                keys=args.keys,
                seconds=sweep_seconds,
                cap=records,
                floor=sync_records,
                commit_interval_ms=args.commit_interval_ms,
                run_id=run_id,
            )
    finally:
        if service is not None:
            service.stop()
        database.close()
        if cluster is not None:
            cluster.stop()

    summaries = _report.summarize(results, ORDER)
    command = "python benchmarks/run.py " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    chart = Path(args.chart) if args.chart != "-" else None
    async_chart = chart.with_name(f"{chart.stem}-async{chart.suffix}") if chart else None
    sections: list[tuple[str, str, str]] = []  # (text, begin mark, end mark)
    if any(s.contender in ASYNC for s in summaries):
        section = _report_sections.render_async(
            summaries,
            results,
            sweep_points,
            records=records,
            sync_records=sync_records,
            commit_interval_ms=args.commit_interval_ms,
            latency_seconds=latency_seconds,
            latency_rate=LATENCY_RATE,
            repeat=repeat,
            service_loop=service.loop if service is not None else "?",
            versions=versions(),
            broker=broker,
            command=command.strip(),
            chart_name=async_chart.name if async_chart and sweep_points else None,
        )
        sections.append((section, _report.ASYNC_BEGIN, _report.ASYNC_END))
    if any(s.contender in PG for s in summaries):
        section = _report_sections.render_postgres(
            summaries,
            results,
            records=pg_records,
            keys=args.keys,
            commit_interval_ms=args.commit_interval_ms,
            repeat=repeat,
            server=server,
            versions=versions(),
            broker=broker,
            command=command.strip(),
        )
        sections.append((section, _report.POSTGRES_BEGIN, _report.POSTGRES_END))
    # A run of sectioned contenders only (async, PostgreSQL) writes their sections alone.
    sections_only = all(s.contender in _report.SECTIONED for s in summaries)
    if sections_only:
        table = "\n".join(text for text, _, _ in sections)
    else:
        table = _report.render(
            summaries,
            results,
            records=records,
            keys=args.keys,
            commit_interval_ms=args.commit_interval_ms,
            latency_seconds=latency_seconds,
            latency_rate=LATENCY_RATE,
            repeat=repeat,
            close_repeat=close_repeat,
            close_pairs=CLOSE_PAIRS,
            versions=versions(),
            broker=broker,
            quix_note=quix_note,
            kafka_streams_note=_kafka_streams.describe(kafka_streams_note, results),
            command=command.strip(),
        )
        latency = _report_sections.render_latency(
            [s for s in summaries if s.contender not in _report.SECTIONED],
            results,
            commit_interval_ms=args.commit_interval_ms,
            latency_seconds=latency_seconds,
            latency_rate=LATENCY_RATE,
        )
        if latency:
            table += "\n" + latency
        for text, _, _ in sections:
            table += "\n" + text
        restore = Path(args.output).with_name(_report.RESTORE_REPORT)
        if args.output != "-" and restore.exists():
            table += "\n" + _report.restore_section(restore.read_text())
    print()
    print(table)
    if args.output != "-":
        output = Path(args.output)
        if sections_only and output.exists():
            # Only these sections: the rest of the report stays as it was.
            table = output.read_text()
            for text, begin, end in sections:
                table = _report.replace_section(table, text, begin, end)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(table)
        print(f"report written to {_rel(output.resolve())}", flush=True)
    drawn = True
    if chart is not None and not sections_only:
        title = f"{records:,} records, commit interval {args.commit_interval_ms} ms"
        main_summaries = [s for s in summaries if s.contender not in _report.SECTIONED]
        drawn = _report.chart(main_summaries, chart, title)
        if drawn:
            print(f"chart written to {_rel(chart.resolve())}", flush=True)
    if async_chart is not None and sweep_points:
        sync_rate = next((s.records_per_s for s in summaries if s.contender == "eos_sync"), None)
        title = (
            f"eos_async: records/s against max_in_flight (HTTP service latency "
            f"{LATENCY_MS:g} ms, commit interval {args.commit_interval_ms} ms)"
        )
        drawn = _report_sections.async_chart(sweep_points, sync_rate, async_chart, title) and drawn
        if drawn:
            print(f"chart written to {_rel(async_chart.resolve())}", flush=True)
    if not drawn:
        print("no chart: matplotlib is not available", file=sys.stderr)
    print(f"wall time {time.monotonic() - wall:.0f} s")
    inexact = [s.contender for s in summaries if not s.exact]
    if inexact:
        print(
            "outputs not exactly one per input (windowed: not exactly one final count per "
            f"closed window, as expected): {', '.join(inexact)}",
            file=sys.stderr,
        )
    print(_report.ratio_line(_report.ratios(summaries)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
