"""The benchmark report: a markdown table, a PNG chart and the RATIO line."""

from __future__ import annotations

import datetime
import importlib
import math
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from _harness import Measurement, median
from _join import CUSTOMERS, JOIN, TIERS
from _windowed import GRACE_MS, STEP_MS, WINDOW_MS, WINDOWED, WINDOWED_KEYS

from eos.config import DEFAULT_MAX_BATCH_RECORDS

RATIOS = (
    ("eos", "bare"),
    ("eos", "quixstreams"),
    ("eos_stateful", "quixstreams_stateful"),
    ("eos", "eos_alos"),
    ("eos_windowed", "quixstreams_windowed"),
    ("eos_join", "quixstreams_join"),
)
DESCRIPTIONS = {
    "bare": "hand-written confluent-kafka transactional loop (the practical limit)",
    "eos": "eos, exactly_once_v2",
    "eos_alos": "eos, at_least_once",
    "quixstreams": 'quixstreams, processing_guarantee="exactly-once"',
    "eos_stateful": "eos, exactly_once_v2, count per key (RocksDB store)",
    "quixstreams_stateful": "quixstreams, exactly-once, count per key (State API, RocksDB)",
    "eos_windowed": "eos, exactly_once_v2, tumbling-window count per key, `.final()`",
    "quixstreams_windowed": "quixstreams, exactly-once, `tumbling_window(...).count().final()`",
    "eos_join": "eos, exactly_once_v2, stream-table join with a customers table (RocksDB)",
    "quixstreams_join": 'quixstreams, exactly-once, `join_asof(customers, how="inner")`',
}


@dataclass
class Summary:
    """A contender's figures over its repetitions (medians; RSS: the highest)."""

    contender: str
    runs: int
    records_per_s: float
    latency_p50_ms: float
    latency_p99_ms: float
    maxrss_mib: float
    exact: bool


def summarize(results: Sequence[Measurement], order: Sequence[str]) -> list[Summary]:
    summaries = []
    for name in order:
        runs = [r for r in results if r.contender == name]
        if not runs:
            continue
        summaries.append(
            Summary(
                contender=name,
                runs=len(runs),
                records_per_s=median([r.records_per_s for r in runs]),
                latency_p50_ms=median([r.latency_p50_ms for r in runs]),
                latency_p99_ms=median([r.latency_p99_ms for r in runs]),
                maxrss_mib=max(r.maxrss_mib for r in runs),
                exact=all(r.exact for r in runs),
            )
        )
    return summaries


def ratios(summaries: Sequence[Summary]) -> dict[str, float | None]:
    rate = {s.contender: s.records_per_s for s in summaries}
    out: dict[str, float | None] = {}
    for a, b in RATIOS:
        out[f"{a}/{b}"] = rate[a] / rate[b] if a in rate and b in rate and rate[b] > 0 else None
    return out


def ratio_line(values: dict[str, float | None]) -> str:
    return "RATIO " + " ".join(
        f"{k}={'n/a' if v is None else f'{v:.2f}'}" for k, v in values.items()
    )


def machine_info() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    memory = ""
    try:
        with open("/proc/meminfo") as f:
            kib = int(f.readline().split()[1])
        memory = f", {kib / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return f"{cpu}, {os.cpu_count()} CPUs{memory}, {platform.system()} {platform.release()}"


def render(
    summaries: Sequence[Summary],
    results: Sequence[Measurement],
    *,
    records: int,
    keys: int,
    commit_interval_ms: int,
    latency_seconds: float,
    latency_rate: int,
    repeat: int,
    versions: str,
    broker: str,
    quix_note: str,
    command: str,
) -> str:
    values = ratios(summaries)
    bare = next((s.records_per_s for s in summaries if s.contender == "bare"), None)
    lines = [
        "# Throughput and latency benchmark",
        "",
        "**The ratios are the point, not the absolute numbers.** Every contender runs on "
        "the same machine, against the same broker, over the same input, so machine and "
        "broker speed cancel out of the ratios; the absolute figures only describe this "
        "(small, shared) machine.",
        "",
        f"Input: {records:,} records of ~100 bytes over 4 partitions, {keys:,} distinct "
        f"keys, produced once and read by every contender (fresh consumer group and output "
        f"topic each, each in a fresh process). Commit interval {commit_interval_ms} ms for "
        f"all. {repeat} repetition(s), order alternating; figures are medians over the "
        "repetitions, peak RSS the highest.",
        "",
    ]
    windowed = any(s.contender in WINDOWED for s in summaries)
    if windowed:
        lines += [_windowed_input(records), ""]
    join = any(s.contender in JOIN for s in summaries)
    if join:
        lines += [_join_input(records), ""]
    lines += [
        "| contender | what | records/s | vs bare | p50 latency ms | p99 latency ms | "
        "peak RSS MiB | outputs exact |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for s in summaries:
        vs_bare = f"{s.records_per_s / bare:.2f}" if bare else "n/a"
        lines.append(
            f"| {s.contender} | {DESCRIPTIONS.get(s.contender, '')} | {s.records_per_s:,.0f} | "
            f"{vs_bare} | {ms(s.latency_p50_ms)} | {ms(s.latency_p99_ms)} | "
            f"{s.maxrss_mib:.0f} | {'yes' if s.exact else 'NO'} |"
        )
    lines += ["", "| ratio (records/s) | value |", "|---|---:|"]
    for key, value in values.items():
        lines.append(f"| {key} | {'n/a' if value is None else f'{value:.2f}'} |")
    lines += [
        "",
        f"The run's last line: `{ratio_line(values)}`",
        "",
        "How it is measured:",
        "",
        "- **records/s**: input records / (the contender's first consumed record -> the moment "
        "the output of the last input record is visible to a `read_committed` consumer that "
        "reads the output topic concurrently).",
        f"- **latency**: after the backlog, records are produced at {latency_rate:,}/s for "
        f"{latency_seconds:g} s to a second input topic (far below every contender's "
        "capacity); latency is a record's timestamp -> its output visible to that "
        "`read_committed` consumer. (On the backlog it would measure the backlog's age.)",
        "- **peak RSS**: `VmHWM` of the contender's own process (`/proc/self/status`; "
        "`getrusage`'s `ru_maxrss` would include the benchmark's own memory, which Linux "
        "carries across `exec`).",
        "- **outputs exact**: the output holds exactly one record per input record.",
    ]
    if windowed:
        lines += _windowed_measure()
    if join:
        lines += _join_measure()
    lines += [
        "- `bare` uses eos's own librdkafka settings (`Config.producer_settings()` and "
        "`consumer_settings()`), so eos/bare is the cost of eos's Python around the same "
        "clients. It commits on the interval only; eos also commits when a transaction "
        f"reaches `max_batch_records` (default {DEFAULT_MAX_BATCH_RECORDS:,}).",
        f"- quixstreams: {quix_note}.",
        "",
        "Per run:",
        "",
        "| run | contender | records/s | p50 ms | p99 ms | RSS MiB | outputs |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for i, r in enumerate(results, 1):
        lines.append(
            f"| {i} | {r.contender} | {r.records_per_s:,.0f} | {ms(r.latency_p50_ms)} | "
            f"{ms(r.latency_p99_ms)} | {r.maxrss_mib:.0f} | {r.outputs:,}/{r.expected_outputs:,} |"
        )
    lines += [
        "",
        f"Machine: {machine_info()}. {versions}. Broker: {broker}.",
        f"Run {datetime.datetime.now().isoformat(timespec='minutes')} with `{command}`.",
        "",
        "![throughput and latency](benchmarks.png)",
        "",
    ]
    return "\n".join(lines)


def _windowed_input(records: int) -> str:
    per_window = WINDOW_MS // STEP_MS
    windows = math.ceil((records - 4) / per_window)  # the data starts on a window boundary
    return (
        f"Windowed contenders (`eos_windowed`, `quixstreams_windowed`) read their own input: "
        f"{records:,} records of ~100 bytes over 4 partitions, {WINDOWED_KEYS:,} keys, event "
        f"timestamps {STEP_MS} ms apart ({per_window:,} records per window, "
        f"{per_window // WINDOWED_KEYS} per key and window), and count per key in "
        f"{WINDOW_MS // 1000} s tumbling windows with {GRACE_MS / 1000:g} s grace, emitting "
        f"only the final count of each (key, window), when it closes: {windows:,} "
        f"window{'s' if windows != 1 else ''} per key, all closed during the run. The last 4 "
        "records, one per partition, are an hour of event time later: they close every "
        "window of the data (see `benchmarks/_windowed.py`)."
    )


def _windowed_measure() -> list[str]:
    return [
        "- **windowed**: records/s as above, up to the moment the last final count is "
        "visible, which is after the record that closed its window is committed. No latency "
        "phase (n/a): a final count waits for its window to close, so latency would measure "
        "the window. **outputs exact**: every output is read back with `read_committed` and "
        "compared with the counts computed from the input as read back from the broker: "
        "exactly one output per (key, window) of the data, with the exact count, and none "
        "for a window still open (the closers' own).",
        "- **the closing rule**: a window closes when its partition's stream time (the "
        "largest timestamp seen on it) reaches end + grace: eos `.final()` (Kafka Streams' "
        "`suppress(untilWindowCloses)`), and quixstreams "
        '`.final(closing_strategy="partition")`. quixstreams\' default, `"key"`, closes a '
        "key's windows only on that key's next record, so without a closer per key its last "
        "windows would stay open. The input is already keyed by the grouping key: quixstreams "
        "needs no `group_by` (which would repartition through a topic), as eos's "
        "`group_by_key()` needs no repartition.",
    ]


def _join_input(records: int) -> str:
    return (
        f"Join contenders (`eos_join`, `quixstreams_join`) read their own input: a compacted "
        f"customers topic of {CUSTOMERS:,} customers (one record each, JSON with one of "
        f"{len(TIERS)} tiers) and an orders topic of {records:,} orders (~100-byte JSON), "
        "both keyed by customer id over 4 partitions, co-partitioned (customer c and its orders in "
        "partition c % 4), every customer record's timestamp before every order's. Each "
        'order is emitted joined, as `{**order, "tier": customer["tier"]}` under its key '
        "(see `benchmarks/_join.py`)."
    )


def _join_measure() -> list[str]:
    return [
        "- **join**: records/s = orders / (the contender's first joined order -> the output "
        "of the last order visible to the `read_committed` consumer); the customers are read "
        "too, but not counted. No latency phase (n/a). **outputs exact**: the output is read "
        "back after the run and every record compared with its order plus its customer's "
        "tier: exactly one per order, none other.",
        "- **the join rule**: eos's `orders.join(customers, ...)` joins each order with the "
        "table's current value for its key, processing the co-partitioned partitions of both "
        "topics in timestamp order (Kafka Streams' rule); the table's topic is its changelog. "
        'quixstreams\' `join_asof(customers, how="inner")` stores the customers in its own '
        "timestamped store (with a changelog topic of its own) and joins each order with the "
        "latest customer record at or before the order's timestamp; it also aligns the two "
        "topics by timestamp. With one customer record per key, older than every order, both "
        "give the same output. They differ on out-of-order data: a late order (older than "
        "customer records already processed) gets, from quixstreams, the customer record as "
        "of its timestamp (or none), from eos the current one; a late customer record (older "
        "than the latest of its key) becomes eos's current value, but not quixstreams' latest.",
    ]


def ms(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.0f}"


def ensure_matplotlib() -> bool:
    """Import matplotlib, pip-installing it into this interpreter's environment if missing."""
    try:
        importlib.import_module("matplotlib")
        return True
    except ImportError:
        pass
    print("installing matplotlib for the chart ...", file=sys.stderr)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "matplotlib"],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        print(f"cannot install matplotlib: {proc.stderr[-500:]}", file=sys.stderr)
        return False
    importlib.invalidate_caches()
    try:
        importlib.import_module("matplotlib")
        return True
    except ImportError:
        return False


def chart(summaries: Sequence[Summary], path: Path, title: str) -> bool:
    """Two panels: records/s, and p50/p99 latency. Returns False without matplotlib."""
    if not ensure_matplotlib():
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    names = [s.contender for s in summaries]
    colors = ["#4C72B0" if n.startswith("eos") else "#999999" for n in names]
    # The throughput panel has a bar per contender, the latency panel fewer.
    fig, (left, right) = plt.subplots(
        1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [max(1, len(names)), 6]}
    )
    bars = left.bar(names, [s.records_per_s for s in summaries], color=colors)
    left.bar_label(bars, labels=[f"{s.records_per_s:,.0f}" for s in summaries], fontsize=8)
    left.set_ylabel("records/s (higher is better)")
    left.yaxis.set_major_formatter(FuncFormatter(lambda y, _pos: f"{y:,.0f}"))
    left.set_title("throughput")
    # Windowed contenders have no latency phase.
    timed = [
        (s, c) for s, c in zip(summaries, colors, strict=True) if not math.isnan(s.latency_p50_ms)
    ]
    xs = range(len(timed))
    width = 0.4
    right.bar([x - width / 2 for x in xs], [s.latency_p50_ms for s, _ in timed], width,
              label="p50", color=[c for _, c in timed])  # fmt: skip
    right.bar([x + width / 2 for x in xs], [s.latency_p99_ms for s, _ in timed], width,
              label="p99", color=[c for _, c in timed], alpha=0.5, hatch="//")  # fmt: skip
    right.set_xticks(list(xs), [s.contender for s, _ in timed])
    right.set_ylabel("ms, record timestamp -> visible (lower is better)")
    right.set_title("end-to-end latency (p50 solid, p99 hatched)")
    for axis in (left, right):
        axis.tick_params(axis="x", labelrotation=35, labelsize=8)
        for label in axis.get_xticklabels():
            label.set_horizontalalignment("right")
            label.set_rotation_mode("anchor")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
