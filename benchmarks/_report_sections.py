"""The sections of the benchmark report: latency, and those with contenders of their
own, async and PostgreSQL.

The latency section follows the main tables. The async and PostgreSQL sections
each render the markdown between their begin and end marks
(``_report.ASYNC_BEGIN``, ``_report.POSTGRES_BEGIN``), so a run of only those
contenders replaces only its section of an existing report
(``_report.replace_section``).
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from pathlib import Path

from _async import ASYNC, MAX_IN_FLIGHT, SweepPoint, ideal
from _harness import Measurement, median
from _http import LATENCY_MS
from _postgres import MAX_BATCH_RECORDS, PG
from _report import (
    ASYNC_BEGIN,
    ASYNC_END,
    DESCRIPTIONS,
    POSTGRES_BEGIN,
    POSTGRES_END,
    Summary,
    ensure_matplotlib,
    machine_info,
    ms,
    ratio_line,
    ratios,
)

LATENCY_BOUND = 2
"""The issue's bound on p99 latency at low load, in commit intervals."""


def render_latency(
    summaries: Sequence[Summary],
    results: Sequence[Measurement],
    *,
    commit_interval_ms: int,
    latency_seconds: float,
    latency_rate: int,
) -> str:
    """p50 and p99 latency at low load per contender, and whether p99 stays under
    :data:`LATENCY_BOUND` commit intervals ("" when no contender had a latency phase)."""
    bound = LATENCY_BOUND * commit_interval_ms
    measured = [s for s in summaries if any(r.latency_samples for r in _runs(results, s))]
    if not measured:
        return ""
    lines = [
        "## Latency at low load",
        "",
        f"After its backlog, each contender gets {latency_rate:,} records/s for "
        f"{latency_seconds:g} s on a second input topic, each record with a key of its own. "
        "Latency is the time from the moment the benchmark produced a record to the moment "
        "its output is visible to the `read_committed` reader: the wait for the transaction "
        "holding it to be committed (up to one commit interval), the commit itself, and the "
        "produce and fetch hops. It is therefore an upper bound of commit-to-visible latency. "
        f"Commit interval {commit_interval_ms} ms; the bound asked for is p99 under "
        f"{LATENCY_BOUND}x the commit interval ({bound} ms), checked on the worst run.",
        "",
        f"| contender | p50 ms | p99 ms | worst run p99 ms | p99 under {bound} ms | "
        "samples per run |",
        "|---|---:|---:|---:|---|---:|",
    ]
    for s in measured:
        runs = [r for r in _runs(results, s) if r.latency_samples]
        worst = max(r.latency_p99_ms for r in runs)
        samples = "/".join(f"{r.latency_samples:,}" for r in runs)
        lines.append(
            f"| {s.contender} | {ms(s.latency_p50_ms)} | {ms(s.latency_p99_ms)} | {ms(worst)} | "
            f"{'yes' if worst < bound else 'NO'} | {samples} |"
        )
    eos = next((s for s in measured if s.contender == "eos"), None)
    if eos is not None:
        worst = max(r.latency_p99_ms for r in _runs(results, eos) if r.latency_samples)
        verdict = "under" if worst < bound else "NOT under"
        lines += [
            "",
            f"eos (exactly_once_v2, commit_interval_ms={commit_interval_ms}): p99 "
            f"{ms(eos.latency_p99_ms)} ms (worst run {ms(worst)} ms), {verdict} "
            f"{LATENCY_BOUND}x the commit interval ({bound} ms).",
        ]
    lines += [
        "",
        "- The reader waits for the first record of each fetch with `poll` and takes the "
        "rest already queued, so a record is stamped when it arrives "
        "(`consume(n, timeout)` would wait for n records or the whole timeout).",
        "- `bare` and `bare_stateful` begin a transaction at the first record after a "
        "commit and commit one interval later, as eos does.",
        "",
    ]
    return "\n".join(lines)


def _runs(results: Sequence[Measurement], summary: Summary) -> list[Measurement]:
    return [r for r in results if r.contender == summary.contender]


def render_async(
    summaries: Sequence[Summary],
    results: Sequence[Measurement],
    points: Sequence[SweepPoint],
    *,
    records: int,
    sync_records: int,
    commit_interval_ms: int,
    latency_seconds: float,
    latency_rate: int,
    repeat: int,
    service_loop: str,
    versions: str,
    broker: str,
    command: str,
    chart_name: str | None,
) -> str:
    """The async section: eos_sync against eos_async, and the max_in_flight sweep.

    Between :data:`ASYNC_BEGIN` and :data:`ASYNC_END`, so that a run of the
    async contenders alone can replace it in an existing report
    (:func:`replace_section`)."""
    latency = f"{LATENCY_MS:g} ms"
    values = ratios(summaries)
    lines = [
        ASYNC_BEGIN,
        "",
        "## Async processors: an HTTP call per record",
        "",
        f"Each record calls an HTTP service that answers after a fixed {latency} "
        "(`GET /tier/<key>`, a small JSON answer with the key's tier) and emits "
        '`value + b"|" + tier` under its key, exactly-once (exactly_once_v2, commit interval '
        f"{commit_interval_ms} ms). `eos_sync` is an `eos.Processor` making the call with a "
        "blocking `http.client` keep-alive connection, one record at a time: at most "
        f"1 / latency = {ideal(1):,.0f} records/s. `eos_async` is an `eos.AsyncProcessor` "
        f"awaiting the call with max_in_flight {MAX_IN_FLIGHT}: at most max_in_flight / "
        f"latency = {ideal(MAX_IN_FLIGHT):,.0f} records/s (the *ideal*). Same input as "
        f"`eos` ({records:,} records, 4 partitions, 10,000 keys: no two records of one key "
        f"are ever in flight together); `eos_sync` reads the first {sync_records:,} records "
        "of such an input (at ~190 records/s the big one would take hours). "
        f"{repeat} repetition(s), medians.",
        "",
        "| contender | what | records | records/s | of its ideal | p50 latency ms | "
        "p99 latency ms | CPU µs/record | peak RSS MiB | outputs exact |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    share: dict[str, float] = {}
    cpu: dict[str, float] = {}
    for s in summaries:
        if s.contender not in ASYNC:
            continue
        mif = 1 if s.contender == "eos_sync" else MAX_IN_FLIGHT
        count = sync_records if s.contender == "eos_sync" else records
        share[s.contender] = s.records_per_s / ideal(mif)
        cpu[s.contender] = cpu_per_record(results, s.contender)
        lines.append(
            f"| {s.contender} | {DESCRIPTIONS[s.contender]} | {count:,} | "
            f"{s.records_per_s:,.0f} | {share[s.contender]:.0%} of "
            f"{ideal(mif):,.0f} | {ms(s.latency_p50_ms)} | {ms(s.latency_p99_ms)} | "
            f"{ms(cpu[s.contender])} | {s.maxrss_mib:.0f} | {'yes' if s.exact else 'NO'} |"
        )
    lines += ["", "| ratio | value |", "|---|---:|"]
    for key in ("eos_async/eos_sync", "eos_async/ideal"):
        value = values[key]
        lines.append(f"| {key} | {'n/a' if value is None else f'{value:.2f}'} |")
    if "eos_async" in share and "eos_async_sleep" in share:
        lines += [
            "",
            "Reading it: without an HTTP stack (`eos_async_sleep`) the engine reaches "
            f"{share['eos_async_sleep']:.0%} of the ideal; what it misses is eos's own (each "
            "commit waits for the records in flight to finish and then commits with none "
            "running; records finish only while the engine runs the loop, not while it "
            "consumes or commits; asyncio's timers are late by up to a millisecond). The HTTP "
            "client on the same loop (`eos_async`: a socket write and read per record, the "
            "service's JSON) raises the contender's CPU per record from "
            f"{ms(cpu['eos_async_sleep'])} to {ms(cpu['eos_async'])} µs, and one thread "
            f"runs eos, asyncio and the client: {share['eos_async']:.0%} of the ideal.",
        ]
    if points:
        lines += [
            "",
            "### Throughput against max_in_flight",
            "",
            "`eos_async` once per max_in_flight, each on an input sized for a few seconds at "
            "its ideal rate (no latency phase); `eos_async_sleep` on the same input (the engine "
            "without an HTTP stack); and the bare HTTP stack: the same client with as many "
            "requests always in flight, against the same service, without Kafka or eos (the "
            "stack's own ceiling on this machine).",
            "",
            "| max_in_flight | ideal records/s | eos_async records/s | of the ideal | "
            "eos_async_sleep records/s | of the ideal | bare HTTP stack requests/s | "
            "of the ideal | records | outputs exact |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for p in points:
            sleep = (
                "n/a | n/a"
                if p.sleep_per_s is None
                else f"{p.sleep_per_s:,.0f} | {p.sleep_per_s / p.ideal:.0%}"
            )
            lines.append(
                f"| {p.max_in_flight} | {p.ideal:,.0f} | {p.records_per_s:,.0f} | "
                f"{p.records_per_s / p.ideal:.0%} | {sleep} | {p.http_per_s:,.0f} | "
                f"{p.http_per_s / p.ideal:.0%} | {p.records:,} | {'yes' if p.exact else 'NO'} |"
            )
        if chart_name:
            lines += ["", f"![eos_async records/s against max_in_flight]({chart_name})"]
    lines += [
        "",
        "How it is measured:",
        "",
        "- **records/s**, **latency**, **peak RSS** as above. **CPU µs/record**: the "
        "contender process's user + system CPU from start to stop (its librdkafka threads "
        "and its start-up included: most of `eos_sync`'s, on its small input), over the "
        "records it processed. Latency: `eos_async*` only, "
        f"paced at {latency_rate:,} records/s for {latency_seconds:g} s; `eos_sync` has no "
        "latency phase (the paced rate is above its capacity). **outputs exact**: exactly "
        "one output per input, and every output read back is an input value with the tier "
        "the service gives its key.",
        "- **the service** (`benchmarks/_http.py`): HTTP/1.1 on 127.0.0.1, in its own "
        f"process (on {service_loop}; uvloop, optional, is used when installed: it takes a "
        "sixth less CPU than plain asyncio), started by the run; each request is answered "
        f"{latency} after it arrived (`loop.call_later`), any number at once. Keep-alive, "
        "`Content-Length` bodies, one request per connection at a time (no pipelining).",
        "- **the client** of `eos_async` (`_http.HttpClient`): keep-alive connections on "
        "eos's processing loop (plain asyncio), one per request in flight, built on "
        "`asyncio.BufferedProtocol`. This benchmark measures eos's engine, so the HTTP stack "
        "must not be the bottleneck: aiohttp's client and server together served ~7,000 "
        "requests/s at 200 concurrent requests on this machine (a sixth of the ideal), and "
        "an `asyncio.Protocol` client spends more on allocating its 256 KiB read buffers "
        "(an `mmap`/`munmap` per read) than on the request. The bare stack column above is "
        "this client's own ceiling here.",
        "- The service, the contender, the broker and the `read_committed` reader share the "
        "machine's CPUs (the service alone takes about half a CPU at 20,000 requests/s), "
        "so on a small machine a CPU-bound contender such as `eos_async` varies from run to "
        "run more than the others: compare figures of one run (`eos_async` at max_in_flight "
        f"{MAX_IN_FLIGHT} is measured both in the table above and in the sweep).",
        "",
        "Per run:",
        "",
        "| run | contender | records | records/s | p50 ms | p99 ms | RSS MiB | outputs |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    runs = [r for r in results if r.contender in ASYNC]
    for i, r in enumerate(runs, 1):
        lines.append(
            f"| {i} | {r.contender} | {r.records:,} | {r.records_per_s:,.0f} | "
            f"{ms(r.latency_p50_ms)} | {ms(r.latency_p99_ms)} | {r.maxrss_mib:.0f} | "
            f"{r.outputs:,}/{r.expected_outputs:,} |"
        )
    lines += [
        "",
        f"Machine: {machine_info()}. {versions}. Broker: {broker}.",
        f"Run {datetime.datetime.now().isoformat(timespec='minutes')} with `{command}`.",
        f"`{ratio_line({k: values[k] for k in ('eos_async/eos_sync', 'eos_async/ideal')})}`",
        "",
        ASYNC_END,
        "",
    ]
    return "\n".join(lines)


def render_postgres(
    summaries: Sequence[Summary],
    results: Sequence[Measurement],
    *,
    records: int,
    keys: int,
    commit_interval_ms: int,
    repeat: int,
    server: str,
    versions: str,
    broker: str,
    command: str,
) -> str:
    """The PostgreSQL sink section: eos_pg against bare_pg.

    Between :data:`POSTGRES_BEGIN` and :data:`POSTGRES_END`, so that a run of the
    PostgreSQL contenders alone can replace it in an existing report
    (:func:`replace_section`)."""
    value = ratios(summaries)["eos_pg/bare_pg"]
    bare = next((s.records_per_s for s in summaries if s.contender == "bare_pg"), None)
    lines = [
        POSTGRES_BEGIN,
        "",
        "## PostgreSQL sink",
        "",
        "Each input record becomes one row, `INSERT INTO <table> (k, v, src) VALUES (%s, %s, "
        "%s)`: its key and value as text and `src` = `<partition>/<offset>`, one statement per "
        "record, into a fresh table per run with no unique constraint (exactly-once needs "
        f"none). Input: {records:,} records of ~100 bytes over 4 partitions, {keys:,} keys "
        "(the kind `eos` reads, in a topic of its own). Commit interval "
        f"{commit_interval_ms} ms for both. {repeat} repetition(s), order alternating, medians.",
        "",
        "| contender | what | records/s | vs bare_pg | CPU µs/record | peak RSS MiB | rows exact |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for s in summaries:
        if s.contender not in PG:
            continue
        vs_bare = f"{s.records_per_s / bare:.2f}" if bare else "n/a"
        lines.append(
            f"| {s.contender} | {DESCRIPTIONS[s.contender]} | {s.records_per_s:,.0f} | "
            f"{vs_bare} | {ms(cpu_per_record(results, s.contender))} | {s.maxrss_mib:.0f} | "
            f"{'yes' if s.exact else 'NO'} |"
        )
    lines += [
        "",
        "| ratio (records/s) | value |",
        "|---|---:|",
        f"| eos_pg/bare_pg | {'n/a' if value is None else f'{value:.2f}'} |",
        "",
        "- **the limit** (`bare_pg`, in `benchmarks/_postgres.py`): a confluent-kafka consumer "
        "with eos's own consumer settings (read_committed, no auto commit, as `bare`) and one "
        "psycopg 3 connection (autocommit off). It consumes batches of up to 5,000 records, "
        "executes the INSERT per record, and every commit interval (or at "
        f"{MAX_BATCH_RECORDS:,} records) upserts the batch's positions into its own offsets "
        "table in one statement (`INSERT ... SELECT FROM unnest(...) ON CONFLICT (grp, topic, "
        "partition) DO UPDATE SET next_offset = EXCLUDED.next_offset`: no epoch, so no "
        "fencing of a zombie) and commits. At assignment it seeks to the positions that "
        "table holds. Nothing else: no Kafka offset commit, no metrics, no error handling.",
        "- **eos_pg**: `eos.Application` with a `PostgresProcessor` whose `process` executes "
        'the same INSERT (`key_serde`/`value_serde` `"string"`), eos\'s defaults otherwise. '
        "Per batch it also updates the offsets table only where the partition's epoch still "
        "holds (`UPDATE ... FROM unnest(...) WHERE epoch = ... RETURNING`), and after the "
        "COMMIT commits the same positions to the consumer group (`commit_kafka_offsets`, on "
        "by default: Kafka's lag tools show progress) and refreshes its lag metrics.",
        "- **records/s**: input records / (the contender's first consumed record -> the "
        "moment a `count(*)` of the table, polled while it runs, first shows every row). No "
        "latency phase. **CPU µs/record**: the contender process's user + system CPU, start "
        "and librdkafka threads included, over the rows. **rows exact**: every row is read "
        "back after the run and compared with the input record its `src` names: exactly one "
        "row per record, with its key and value.",
        "- Every row costs a round trip to the server, which commits with fsync on; both "
        "contenders pay the same statements and commits, so eos_pg/bare_pg is the cost of "
        "eos's Python around them and its per-batch offsets protocol. The server, the "
        "broker, the contender and the row counter share this machine's CPUs.",
        "",
        "Per run:",
        "",
        "| run | contender | records/s | CPU µs/record | RSS MiB | rows |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    runs = [r for r in results if r.contender in PG]
    for i, r in enumerate(runs, 1):
        lines.append(
            f"| {i} | {r.contender} | {r.records_per_s:,.0f} | "
            f"{ms(cpu_per_record([r], r.contender))} | {r.maxrss_mib:.0f} | "
            f"{r.outputs:,}/{r.expected_outputs:,} |"
        )
    lines += [
        "",
        f"Machine: {machine_info()}. {versions}. Broker: {broker}. Database: {server}.",
        f"Run {datetime.datetime.now().isoformat(timespec='minutes')} with `{command}`.",
        f"`{ratio_line({'eos_pg/bare_pg': value})}`",
        "",
        POSTGRES_END,
        "",
    ]
    return "\n".join(lines)


def cpu_per_record(results: Sequence[Measurement], contender: str) -> float:
    """The median over ``contender``'s runs of its process CPU per output, µs."""
    return median(
        [
            1e6 * float(r.extra["cpu_s"]) / r.outputs  # type: ignore[arg-type]
            for r in results
            if r.contender == contender and r.outputs and "cpu_s" in r.extra
        ]
    )


def async_chart(
    points: Sequence[SweepPoint], sync_rate: float | None, path: Path, title: str
) -> bool:
    """Two panels against max_in_flight: records/s (with the ideal and the bare HTTP
    stack), and the share of the ideal. Returns False without matplotlib."""
    if not ensure_matplotlib():
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    xs = [p.max_in_flight for p in points]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    left.plot(xs, [p.ideal for p in points], "--", color="#999999",
              label=f"ideal: max_in_flight / {LATENCY_MS:g} ms")  # fmt: skip
    left.plot(xs, [p.http_per_s for p in points], "s:", color="#55A868",
              label="bare HTTP stack (no Kafka, no eos), requests/s")  # fmt: skip
    left.plot(xs, [p.records_per_s for p in points], "o-", color="#4C72B0",
              label="eos_async, records/s")  # fmt: skip
    slept = [p for p in points if p.sleep_per_s is not None]
    if slept:
        left.plot([p.max_in_flight for p in slept], [p.sleep_per_s for p in slept], "^-.",
                  color="#8172B3", label="eos_async_sleep (no HTTP), records/s")  # fmt: skip
    for p in points:
        left.annotate(f"{p.records_per_s:,.0f}", (p.max_in_flight, p.records_per_s),
                      textcoords="offset points", xytext=(0, -14), ha="center",
                      fontsize=8)  # fmt: skip
    if sync_rate is not None:
        left.plot([1], [sync_rate], "D", color="#DD8452", markerfacecolor="none",
                  markersize=10, label="eos_sync (Processor), records/s")  # fmt: skip
    left.set_xscale("log")
    left.set_yscale("log")
    left.yaxis.set_major_formatter(FuncFormatter(lambda y, _pos: f"{y:,.0f}"))
    left.set_ylabel("records/s (log scale)")
    left.set_title("throughput")
    left.legend(fontsize=8, loc="upper left")
    right.plot(xs, [100 * p.http_per_s / p.ideal for p in points], "s:", color="#55A868",
               label="bare HTTP stack")  # fmt: skip
    if slept:
        right.plot([p.max_in_flight for p in slept],
                   [100 * p.sleep_per_s / p.ideal for p in slept if p.sleep_per_s is not None],
                   "^-.", color="#8172B3", label="eos_async_sleep (no HTTP)")  # fmt: skip
    right.plot(xs, [100 * p.records_per_s / p.ideal for p in points], "o-", color="#4C72B0",
               label="eos_async")  # fmt: skip
    for p in points:
        share = 100 * p.records_per_s / p.ideal
        right.annotate(f"{share:.0f}%", (p.max_in_flight, share), textcoords="offset points",
                       xytext=(0, -14), ha="center", fontsize=8)  # fmt: skip
    right.set_xscale("log")
    right.set_ylim(0, 105)
    right.set_ylabel("% of the ideal (max_in_flight / latency)")
    right.set_title("share of the ideal")
    right.legend(fontsize=8, loc="lower left")
    for axis in (left, right):
        axis.set_xticks(xs, [str(x) for x in xs])
        axis.minorticks_off()
        axis.set_xlabel("max_in_flight")
        axis.grid(True, which="major", alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
