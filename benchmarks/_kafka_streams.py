"""Kafka Streams as a contender: ``kafka_streams`` (the copy) and ``kafka_streams_stateful``
(the count per key), the reference implementation next to eos.

``kafka_streams/StreamsContender.java`` is built at benchmark time: Maven fetches
``org.apache.kafka:kafka-streams`` of the broker's version
(``eos.testing.kafka.KAFKA_VERSION``) and its runtime classpath from Maven Central,
``javac`` compiles the one source file against it. The result lands in
``eos.testing.kafka.cache_dir()/kafka-streams-<version>-<digest of the sources>``
with a ``COMPLETE`` marker, so later runs start at once and an edited source is
rebuilt. :func:`build` returns the ``java`` command line of a contender (``_harness``
appends the common arguments) or ``None`` and why: without Java 17 or Maven the
benchmark skips these two contenders with that note.

The app speaks ``_harness``'s contender protocol (see the Java source): it runs
until SIGTERM, closes cleanly (which commits), and prints the JSON result line
last. Besides ``first_consumed``, ``maxrss_mib`` and ``cpu_s`` that line carries
what explains the comparison: JIT compilation and GC seconds, the peak thread count,
and a progress mark every 10,000 records (records, unix seconds, the stream thread's
and the whole process's CPU seconds), from which :func:`describe` computes the
warm-up and the CPUs used. For experiments, a ``-Dstreams.<name>=<value>`` added to
:data:`JVM_FLAGS` sets any Kafka Streams setting (``-Dstreams.producer.batch.size=...``);
the benchmark adds none.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _harness import BENCH_DIR, Measurement, median

from eos.testing.kafka import KAFKA_VERSION, cache_dir

KAFKA_STREAMS = ("kafka_streams", "kafka_streams_stateful")
SOURCE_DIR = BENCH_DIR / "kafka_streams"
MAIN_CLASS = "eos.bench.StreamsContender"
JAVA_SOURCE = SOURCE_DIR / "src" / "main" / "java" / "eos" / "bench" / "StreamsContender.java"
JVM_FLAGS = ("-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",)
"""Kafka Streams' warnings to the contender's log; the JVM's own defaults otherwise."""
SETTINGS = (
    "`exactly_once_v2`, `commit.interval.ms` the commit interval, `num.stream.threads` 1, "
    "`statestore.cache.max.bytes` 0 (no record cache: every update is emitted and written to "
    "the changelog, as eos does)"
)
WARMUP_RECORDS = 50_000
"""The head of the backlog whose rate :func:`describe` compares with the rest's."""


def _digest() -> str:
    sha = hashlib.sha256()
    for path in (SOURCE_DIR / "pom.xml", JAVA_SOURCE):
        sha.update(path.read_bytes())
    return sha.hexdigest()[:10]


def _run_with_progress(argv: list[str], what: str) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` quietly, saying every 15 s that it is still running."""
    started = time.monotonic()
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as proc:
        while True:
            try:
                out, _ = proc.communicate(timeout=15)
                break
            except subprocess.TimeoutExpired:
                print(f"  {what}: {time.monotonic() - started:.0f} s ...", flush=True)
    return subprocess.CompletedProcess(argv, proc.returncode, out, "")


def build(version: str = KAFKA_VERSION) -> tuple[list[str] | None, str]:
    """The ``java`` command line of the contender (built on first use), and a note.

    ``None`` and the reason when Java 17, ``javac`` or Maven is missing or the build
    fails: the benchmark then skips both contenders.
    """
    java, javac, mvn = shutil.which("java"), shutil.which("javac"), shutil.which("mvn")
    if java is None or javac is None or mvn is None:
        missing = [n for n, p in (("java", java), ("javac", javac), ("mvn", mvn)) if p is None]
        return None, (
            f"skipped: {' and '.join(missing)} not found (needs a JDK 17+ and Maven); "
            "its ratios are n/a"
        )
    home = cache_dir() / f"kafka-streams-{version}-{_digest()}"
    classes, libs, marker = home / "classes", home / "libs", home / "COMPLETE"
    home.parent.mkdir(parents=True, exist_ok=True)
    with open(home.parent / f".kafka-streams-{version}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not marker.exists():
            reason = _build(home, version, mvn=mvn, javac=javac)
            if reason is not None:
                return None, f"skipped: {reason}; its ratios are n/a"
    argv = [java, *JVM_FLAGS, "-cp", f"{classes}:{libs}/*", MAIN_CLASS]
    return argv, (
        f"Kafka Streams {version} (`org.apache.kafka:kafka-streams` from Maven Central, "
        f"`benchmarks/kafka_streams/`, built once into eos's cache directory), {SETTINGS}; "
        "Kafka Streams' and the JVM's defaults otherwise"
    )


def _build(home: Path, version: str, *, mvn: str, javac: str) -> str | None:
    """Fetch the classpath with Maven, compile with javac; None, or what failed."""
    for stale in home.parent.glob(f"kafka-streams-{version}-*"):  # older sources' builds
        shutil.rmtree(stale)
    home.mkdir(parents=True)
    shutil.copy(SOURCE_DIR / "pom.xml", home / "pom.xml")
    print(
        f"kafka_streams: fetching kafka-streams {version} with Maven and compiling with "
        f"javac into {home} (once) ...",
        flush=True,
    )
    started = time.monotonic()
    fetch = [
        mvn, "-B", "-q", "-f", str(home / "pom.xml"), f"-Dkafka.version={version}",
        "dependency:copy-dependencies", "-DincludeScope=runtime",
        f"-DoutputDirectory={home / 'libs'}",
    ]  # fmt: skip
    proc = _run_with_progress(fetch, "mvn")
    jars = sorted((home / "libs").glob("kafka-streams-*.jar"))
    if proc.returncode != 0 or not jars:
        tail = " | ".join(proc.stdout.strip().splitlines()[-5:])
        return f"mvn could not fetch kafka-streams {version}: {tail or proc.returncode}"
    compile_ = [
        javac, "--release", "17", "-cp", f"{home / 'libs'}/*", "-d", str(home / "classes"),
        str(JAVA_SOURCE),
    ]  # fmt: skip
    proc = _run_with_progress(compile_, "javac")
    if proc.returncode != 0:
        tail = " | ".join(proc.stdout.strip().splitlines()[-5:])
        return f"javac failed: {tail}"
    jar_count = len(list((home / "libs").glob("*.jar")))
    (home / "COMPLETE").write_text(f"kafka-streams {version}, {jar_count} jars\n")
    print(f"kafka_streams: built in {time.monotonic() - started:.0f} s", flush=True)
    return None


@dataclass(frozen=True)
class Backlog:
    """What one run's progress marks say about its backlog phase (processing, not
    visibility: the marks are taken as records reach the topology)."""

    early: float
    """records/s over the first WARMUP_RECORDS records"""
    rest: float
    """records/s from there to the end of the backlog"""
    cores: float
    """CPUs kept busy by the whole process over the backlog"""
    stream_cores: float
    """... of which by the stream thread"""


def backlog(m: Measurement) -> Backlog | None:
    """The backlog phase of one run from its progress marks, or None without enough
    marks (a backlog not much longer than WARMUP_RECORDS)."""
    marks: list[list[float]] = m.extra.get("progress") or []  # type: ignore[assignment]
    marks = [mk for mk in marks if mk[0] <= m.records]
    head = next((mk for mk in marks if mk[0] >= WARMUP_RECORDS), None)
    if len(marks) < 2 or head is None or marks[-1][0] <= head[0]:
        return None
    first, last = marks[0], marks[-1]
    seconds = max(last[1] - first[1], 1e-6)
    return Backlog(
        early=(head[0] - first[0]) / max(head[1] - first[1], 1e-6),
        rest=(last[0] - head[0]) / max(last[1] - head[1], 1e-6),
        cores=(last[3] - first[3]) / seconds,
        stream_cores=(last[2] - first[2]) / seconds,
    )


def describe(note: str, results: Sequence[Measurement]) -> str:
    """``note`` plus, for each Kafka Streams contender that ran, what the run shows of
    its JIT warm-up, threads and CPU next to eos's (medians over the repetitions)."""
    if not note:
        return ""
    parts = [note]
    ran = [r for r in results if r.contender in KAFKA_STREAMS]
    if ran:
        jvm = ran[0].extra
        gcs = jvm.get("gc")
        collectors = " and ".join(map(str, gcs)) if isinstance(gcs, list) and gcs else "?"
        parts.append(
            f"{jvm.get('java', 'Java')}, GC {collectors}, max heap "
            f"{_float(jvm.get('max_heap_mib')):,.0f} MiB (the JVM's defaults for this machine). "
            "Each repetition starts a fresh JVM, so the JIT's warm-up falls inside every "
            "measured window, as it does for an instance just (re)started; a long-running "
            "instance runs at least at the later rate below. The JIT compiler, GC and "
            f"producer sender threads share this machine's {os.cpu_count()} CPUs with the "
            "broker, the reader and the stream thread"
        )
    for name, peer in (("kafka_streams", "eos"), ("kafka_streams_stateful", "eos_stateful")):
        runs = [r for r in ran if r.contender == name]
        if not runs:
            continue
        text = f"{name}"
        phases = [b for b in (backlog(r) for r in runs) if b is not None]
        if phases:
            early = median([b.early for b in phases])
            rest = median([b.rest for b in phases])
            cores = median([b.cores for b in phases])
            stream = median([b.stream_cores for b in phases])
            text += (
                f": processed its first {WARMUP_RECORDS:,} records at {early:,.0f}/s and the "
                f"rest of the backlog at {rest:,.0f}/s; over the backlog "
                f"it kept {cores:.2f} CPUs busy, {stream:.2f} of them in its stream thread"
            )
        jit = median([_float(r.extra.get("jit_s")) for r in runs])
        gc = median([_float(r.extra.get("gc_s")) for r in runs])
        cpu = median([_float(r.extra.get("cpu_s")) for r in runs])
        threads = max(int(_float(r.extra.get("peak_threads"))) for r in runs)
        text += (
            f"; {jit:.1f} s in JIT compilation (summed over the compiler threads), {gc:.1f} s "
            f"in GC, {threads} threads at most; CPU over the process's life {cpu:.1f} s"
        )
        peer_cpu = median([_float(r.extra.get("cpu_s")) for r in results if r.contender == peer])
        if peer_cpu == peer_cpu:
            text += f" ({peer}'s: {peer_cpu:.1f} s)"
        parts.append(text)
    return ". ".join(parts)


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")
