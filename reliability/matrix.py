"""Kafka's own transaction test matrix, run against eos.

Modelled on Kafka's ``tests/kafkatest/tests/core/transactions_test.py`` and
``streams_eos_test.py``: a 3-node cluster (replication 3,
``min.insync.replicas=2``), input written by a transactional producer that aborts
a random third of its transactions, two eos pipelines running at once (a copy
and a count per key in a RocksDB store), each with two instances sharing its
group, and one kind of fault injected again and again while the input flows:

- ``broker-hard-bounce``: SIGKILL one broker node at a time, restart it;
- ``broker-clean-bounce``: SIGTERM one broker node at a time, restart it;
- ``client-hard-bounce``: SIGKILL an instance of each pipeline, restart it;
- ``client-clean-bounce``: SIGTERM an instance of each pipeline (it must exit 0),
  restart it;
- ``controller-kill``: SIGKILL the active KRaft controller, restart it;
- ``coordinator-kill``: SIGKILL the node that is the transaction coordinator of
  an instance of each pipeline (whose transactions commit every 100 ms, so the
  kill lands mid-transaction), restart it.

Every cell is checked with ``read_committed`` readers: every committed input
exactly once in the copy's output, in per-key order, no aborted input ever; the
count's outputs per key exactly ``1..N``; no transaction left open at the end;
every instance exits 0 on the final SIGTERM.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import KafkaException, Producer

from eos.state.topics import changelog_topic
from eos.testing.helpers import (
    ReadRecord,
    committed_offsets,
    create_topic,
    read_topic,
    unique_name,
    wait_caught_up,
    wait_no_open_transactions,
)
from eos.testing.kafka import KafkaCluster, KafkaNode
from eos.testing.process import AppProcess
from eos.testing.verify import verify_exactly_once

__all__ = ["FAULTS", "CellResult", "run_cell", "run_matrix"]

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
PARTITIONS = 4
KEYS = 97
INSTANCES = 2
TRANSACTION_TIMEOUT_MS = 15_000
SESSION_TIMEOUT_MS = 6_000

FAULTS = (
    "broker-hard-bounce",
    "broker-clean-bounce",
    "client-hard-bounce",
    "client-clean-bounce",
    "controller-kill",
    "coordinator-kill",
)


@dataclass
class CellResult:
    """One row of the matrix's table."""

    fault: str
    pipeline: str
    records: int
    faults: int
    lost: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    wrong_counts: int | None = None
    aborted_seen: int = 0
    exits: list[int] = field(default_factory=list)
    open_transactions: bool = False
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            not (self.lost or self.duplicated or self.out_of_order or self.aborted_seen)
            and not self.wrong_counts
            and all(code == 0 for code in self.exits)
            and not self.open_transactions
            and not self.notes
        )


class TransactionalInput:
    """Writes ``records`` committed input records over about ``seconds``, in transactions of
    10-100 records, aborting a random third of them (values ``x...``; committed ones
    ``v...``). Survives broker faults: a failed transaction is aborted and written again with
    new values; a fatal producer is replaced."""

    def __init__(self, bootstrap: str, topic: str, records: int, seconds: float, seed: int) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.records = records
        self.seconds = seconds
        self.rng = random.Random(seed)
        self.committed = 0
        self.aborted = 0
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.done = threading.Event()

    def _producer(self) -> Producer:
        producer = Producer(
            {
                "bootstrap.servers": self.bootstrap,
                "transactional.id": f"reliability-input-{uuid.uuid4().hex[:8]}",
                "transaction.timeout.ms": 30_000,
                "linger.ms": 5,
                "log_level": 2,
            }
        )
        _retry(producer.init_transactions, 10)
        return producer

    def _run(self) -> None:
        try:
            producer = self._producer()
            seq = 0
            started = time.monotonic()
            while self.committed < self.records:
                size = min(self.rng.randint(10, 100), self.records - self.committed)
                abort = self.rng.random() < 1 / 3
                try:
                    producer.begin_transaction()
                    for _ in range(size):
                        value = f"{'x' if abort else 'v'}{seq:08d}".encode()
                        key = f"k{seq % KEYS:03d}".encode()
                        seq += 1
                        _produce(producer, self.topic, value, key)
                    if abort:
                        _retry(producer.abort_transaction, 10)
                        self.aborted += size
                    else:
                        _retry(producer.commit_transaction, 10)
                        self.committed += size
                except KafkaException as exc:
                    # The transaction failed (a broker bounce): abort it; a fatal producer
                    # (INVALID_TXN_STATE, fenced after a coordinator move) is replaced.
                    try:
                        if exc.args[0].fatal():
                            raise
                        _retry(producer.abort_transaction, 10)
                    except KafkaException:
                        producer = self._producer()
                    continue
                due = started + self.seconds * self.committed / self.records
                time.sleep(max(0.0, due - time.monotonic()))
        except BaseException as exc:  # handed to the caller
            self.errors.append(exc)
        finally:
            self.done.set()

    def start(self) -> TransactionalInput:
        self.thread.start()
        return self

    def join(self, timeout: float) -> None:
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise TimeoutError(f"the input writer did not finish in {timeout:.0f}s")
        if self.errors:
            raise RuntimeError(f"the input writer failed: {self.errors[0]!r}")


def _produce(producer: Producer, topic: str, value: bytes, key: bytes) -> None:
    while True:
        try:
            producer.produce(topic, value, key)
            return
        except BufferError:
            producer.poll(0.05)


def _retry(call: Callable[[float], object], timeout: float, deadline_s: float = 180.0) -> None:
    """Call until it succeeds while its error is retriable (resuming the transactional call)."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            call(timeout)
            return
        except KafkaException as exc:
            error = exc.args[0]
            if not error.retriable() or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@dataclass
class Pipeline:
    """One eos application (copy or count) with its instances."""

    name: str
    example: str
    app_id: str
    output: str
    state_dir: Path | None
    log_dir: Path
    bootstrap: str
    source: str
    instances: list[AppProcess] = field(default_factory=list)

    def process(self, index: int) -> AppProcess:
        args = [
            str(EXAMPLES / self.example),
            "--bootstrap-servers", self.bootstrap,
            "--input", self.source,
            "--output", self.output,
            "--application-id", self.app_id,
            "--instance-id", str(index),
            "--session-timeout-ms", str(SESSION_TIMEOUT_MS),
            "--transaction-timeout-ms", str(TRANSACTION_TIMEOUT_MS),
        ]  # fmt: skip
        if self.state_dir is not None:
            args += ["--state-dir", str(self.state_dir / str(index))]
        return AppProcess(args, log_path=self.log_dir / f"{self.app_id}-{index}.log")

    def start(self) -> None:
        self.instances = [self.process(i).start() for i in range(INSTANCES)]

    def transactional_id(self, index: int) -> str:
        return f"{self.app_id}-{index}"


def _ensure_running(cluster: KafkaCluster) -> None:
    for node in cluster.nodes:
        if not node.running:
            node.restart()


def _bounce(node: KafkaNode, *, hard: bool) -> None:
    if hard:
        node.kill()
    else:
        node.stop()
    node.restart()


def run_cell(
    cluster: KafkaCluster,
    fault: str,
    *,
    records: int,
    faults: int,
    work_dir: Path,
    seed: int = 1,
    log: Callable[[str], None] = print,
) -> list[CellResult]:
    """Run both pipelines through ``faults`` injections of ``fault``; one result per pipeline."""
    if fault not in FAULTS:
        raise ValueError(f"unknown fault {fault!r}; one of {', '.join(FAULTS)}")
    rng = random.Random(seed)
    bootstrap = cluster.bootstrap_servers
    started = time.monotonic()
    source = create_topic(bootstrap, unique_name("rel-in"), PARTITIONS, 3, _MIN_ISR)
    cell_dir = work_dir / f"{fault}-{uuid.uuid4().hex[:6]}"
    pipelines = [
        Pipeline(
            "copy", "uppercase.py", unique_name("rel-copy"),
            create_topic(bootstrap, unique_name("rel-copy-out"), PARTITIONS, 3, _MIN_ISR),
            None, cell_dir, bootstrap, source,
        ),
        Pipeline(
            "count", "count_per_key.py", unique_name("rel-count"),
            create_topic(bootstrap, unique_name("rel-count-out"), PARTITIONS, 3, _MIN_ISR),
            cell_dir / "state", cell_dir, bootstrap, source,
        ),
    ]  # fmt: skip
    for pipeline in pipelines:
        pipeline.start()
    for pipeline in pipelines:
        for app in pipeline.instances:
            app.wait_for_current_log("eos.engine: assigned", 120)
    # Input flows for about 4 s per fault, the faults spread over it.
    seconds = 4.0 * max(1, faults)
    feeder = TransactionalInput(bootstrap, source, records, seconds, seed).start()
    injected = 0
    try:
        for n in range(faults):
            time.sleep(rng.uniform(0.5, 1.5) * seconds / (faults + 1))  # the moment of the fault
            injected += _inject(cluster, fault, pipelines, rng, n)
        feeder.join(timeout=600)
        _ensure_running(cluster)
        died: dict[str, list[str]] = defaultdict(list)
        for pipeline in pipelines:
            for index, app in enumerate(pipeline.instances):
                if not app.alive():
                    code = app.proc.returncode if app.proc is not None else None
                    died[pipeline.name].append(f"instance {index} exited {code} mid-cell")
                    log(f"  {pipeline.name}[{index}] had exited ({code}): restarting it")
                    app.start()
        for pipeline in pipelines:
            wait_caught_up(bootstrap, pipeline.app_id, source, timeout=300)
        exits = {p.name: [_stop(app, log) for app in p.instances] for p in pipelines}
    finally:
        for pipeline in pipelines:
            for app in pipeline.instances:
                app.kill()
        _ensure_running(cluster)
    inputs = read_topic(bootstrap, source, timeout=120)
    aborted_inputs = feeder.aborted
    results = []
    for pipeline in pipelines:
        result = CellResult(fault, pipeline.name, len(inputs), injected, exits=exits[pipeline.name])
        result.notes += died[pipeline.name]
        for i, code in enumerate(exits[pipeline.name]):
            if code == STUCK:
                result.notes.append(f"instance {i} did not exit within 120 s of SIGTERM")
            elif code != 0:
                result.notes.append(f"instance {i} exited {code} on SIGTERM")
        topics = [pipeline.output]
        if pipeline.name == "count":
            topics.append(changelog_topic(pipeline.app_id, "counts"))
        try:
            for topic in topics:
                wait_no_open_transactions(bootstrap, topic, timeout=60)
        except TimeoutError:
            result.open_transactions = True
        outputs = read_topic(bootstrap, pipeline.output, timeout=120)
        if pipeline.name == "copy":
            _check_copy(result, inputs, outputs)
            if result.lost or result.duplicated:
                log(_diagnose(cluster, pipeline, inputs, outputs))
        else:
            _check_count(result, inputs, outputs)
            if result.wrong_counts:
                log(_diagnose_count(cluster, pipeline, inputs, outputs))
        if len(inputs) != records:
            result.notes.append(f"{len(inputs)} committed inputs, {records} intended")
        result.seconds = time.monotonic() - started
        results.append(result)
        log(
            f"  {fault} {pipeline.name}: {len(inputs):,} inputs ({aborted_inputs:,} aborted "
            f"never to be seen), {injected} faults, ok={result.ok}"
        )
    if all(r.ok for r in results):
        shutil.rmtree(cell_dir, ignore_errors=True)
    return results


_MIN_ISR = {"min.insync.replicas": "2"}


def _inject(
    cluster: KafkaCluster, fault: str, pipelines: Sequence[Pipeline], rng: random.Random, n: int
) -> int:
    """Inject one fault; return how many things were hit."""
    if fault in ("broker-hard-bounce", "broker-clean-bounce"):
        _bounce(cluster.nodes[n % len(cluster.nodes)], hard=fault == "broker-hard-bounce")
        return 1
    if fault == "controller-kill":
        _bounce(cluster.active_controller(), hard=True)
        return 1
    if fault == "coordinator-kill":
        pipeline = pipelines[n % len(pipelines)]
        node = cluster.transaction_coordinator(pipeline.transactional_id(rng.randrange(INSTANCES)))
        _bounce(node, hard=True)
        return 1
    hits = 0
    for pipeline in pipelines:
        index = rng.randrange(INSTANCES)
        app = pipeline.instances[index]
        if fault == "client-hard-bounce":
            app.kill()
        else:
            code = app.terminate(timeout=120)
            if code != 0:
                raise AssertionError(f"{pipeline.name}[{index}] exited {code} on SIGTERM")
        app.start()
        hits += 1
    return hits


STUCK = -999
"""The exit code recorded for an instance that did not exit within 120 s of SIGTERM."""


def _stop(app: AppProcess, log: Callable[[str], None]) -> int:
    """SIGTERM; if it does not exit within 120 s, dump its stacks (SIGUSR1), then SIGKILL."""
    try:
        return app.terminate(timeout=120)
    except (subprocess.TimeoutExpired, TimeoutError):
        # AppProcess.wait asked for its stacks before killing it: show them where the
        # failure is reported, since the cell's directory may not outlive the run.
        log(f"  {app.log_path.name} did not exit on SIGTERM; the end of its log:")
        log(app.log_tail(120))
        return STUCK


def _check_copy(result: CellResult, inputs: list[ReadRecord], outputs: list[ReadRecord]) -> None:
    verdict = verify_exactly_once(inputs, outputs, bytes.upper)
    result.lost = verdict.lost
    result.duplicated = verdict.duplicates
    result.out_of_order = verdict.out_of_order_keys
    result.aborted_seen = sum(1 for r in outputs if (r.value or b"").startswith(b"X"))
    if verdict.unexpected and not result.aborted_seen:
        result.notes.append(f"{verdict.unexpected} unexpected outputs")


_LOG_EVENTS = (
    "abort", "rewound", "renew", "revok", "assigned", "lost", "fatal", "fenced", "error",
    "warning", "consumer",
)  # fmt: skip


def _diagnose(
    cluster: KafkaCluster, pipeline: Pipeline, inputs: list[ReadRecord], outputs: list[ReadRecord]
) -> str:
    """Where the copy lost or repeated records: which inputs; for a loss, whether their
    outputs exist in the log at all (read_uncommitted); for a repeat, where each copy sits
    and which producer (id, epoch) wrote the batches around it; where the group committed;
    and what the instances logged. Printed with the failing cell, so a rare failure can be
    understood from the run's log."""
    bootstrap = cluster.bootstrap_servers
    produced = {r.value for r in outputs}
    lost = [r for r in inputs if (r.value or b"").upper() not in produced]
    lines = []
    if lost:
        lines += [f"  copy lost {len(lost)} input(s):", *_offset_runs("input", lost)]
        try:
            uncommitted = read_topic(
                bootstrap, pipeline.output, isolation_level="read_uncommitted", timeout=60
            )
            where = {r.value: (r.partition, r.offset) for r in uncommitted}
            seen = [
                where[(r.value or b"").upper()] for r in lost if (r.value or b"").upper() in where
            ]
            lines.append(
                f"    {len(seen)} of them are in the output log, uncommitted (aborted or open): "
                f"{seen[:20]}"
            )
        except (KafkaException, TimeoutError) as exc:
            lines.append(f"    reading the output read_uncommitted failed: {exc!r}")
    copies: dict[bytes | None, list[ReadRecord]] = defaultdict(list)
    for record in outputs:
        copies[record.value].append(record)
    repeated = {value: found for value, found in copies.items() if len(found) > 1}
    if repeated:
        source = {(r.value or b"").upper(): r for r in inputs}
        repeated_inputs = sorted(
            (source[v] for v in repeated if v in source), key=lambda r: (r.partition, r.offset)
        )
        lines += [
            f"  copy wrote {len(repeated)} output(s) more than once; their inputs:",
            *_offset_runs("input", repeated_inputs),
            "    the copies (output partition, offset), first 20:",
        ]
        for value in list(repeated)[:20]:
            lines.append(f"      {[(r.partition, r.offset) for r in repeated[value]]}")
        at: dict[int, list[int]] = defaultdict(list)
        for both in repeated.values():
            for record in both:
                at[record.partition].append(record.offset)
        lines += _dump_batches(cluster, pipeline.output, at)
    try:
        committed = committed_offsets(bootstrap, pipeline.app_id, pipeline.source, timeout=30)
        lines.append(f"    the group's committed offsets: {dict(sorted(committed.items()))}")
    except (KafkaException, TimeoutError) as exc:
        lines.append(f"    reading the committed offsets failed: {exc!r}")
    lines += _instance_events(pipeline)
    return "\n".join(lines)


def _offset_runs(what: str, records: Sequence[ReadRecord]) -> list[str]:
    """One line per partition: the offsets of ``records`` there (the first 40)."""
    by_partition: dict[int, list[int]] = defaultdict(list)
    for record in records:
        by_partition[record.partition].append(record.offset)
    return [
        f"    {what}[{partition}] offsets {offsets[0]}..{offsets[-1]} ({len(offsets)}): "
        f"{offsets[:40]}"
        for partition, offsets in sorted(by_partition.items())
    ]


def _dump_batches(cluster: KafkaCluster, topic: str, offsets: dict[int, list[int]]) -> list[str]:
    """The record batches of ``topic``'s partitions around ``offsets`` as one node's log holds
    them (Kafka's DumpLogSegments): base and last offset, producer id and epoch, and the
    transaction markers, so two copies can be told apart by the producer that wrote them."""
    lines: list[str] = []
    for partition, where in sorted(offsets.items()):
        low, high = min(where) - 50, max(where) + 50
        holders = [
            node
            for node in cluster.nodes
            if (node.directory / "data" / f"{topic}-{partition}").is_dir()
        ]
        if not holders:
            continue
        node = holders[0]
        directory = node.directory / "data" / f"{topic}-{partition}"
        segments = sorted(str(p) for p in directory.glob("*.log"))
        try:
            dump = subprocess.run(
                [
                    node.java,
                    "-cp",
                    node.classpath,
                    "kafka.tools.DumpLogSegments",
                    "--deep-iteration",
                    "--files",
                    ",".join(segments),
                ],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            ).stdout
        except (OSError, subprocess.TimeoutExpired) as exc:
            lines.append(f"    dumping {directory.name} failed: {exc!r}")
            continue
        lines.append(f"    {directory.name} batches around offsets {low}..{high}:")
        keep = False
        for line in dump.splitlines():
            if line.startswith("baseOffset:"):
                fields = line.split()
                base, last = int(fields[1]), int(fields[3])
                keep = last >= low and base <= high
                if keep:
                    lines.append("      " + _batch_summary(line))
            elif keep and "endTxnMarker:" in line:  # a control batch's one record
                lines[-1] += " " + _batch_summary(line)
    return lines


def _batch_summary(line: str) -> str:
    """The fields of one DumpLogSegments batch line that tell who wrote it."""
    fields = line.split()
    keep = ("baseOffset:", "lastOffset:", "count:", "baseSequence:", "producerId:",
            "producerEpoch:", "isTransactional:", "isControl:", "endTxnMarker:",
            "coordinatorEpoch:")  # fmt: skip
    pairs = [f"{fields[i][:-1]}={fields[i + 1]}" for i in range(len(fields) - 1)
             if fields[i] in keep]  # fmt: skip
    return " ".join(pairs) or line[:200]


def _diagnose_count(
    cluster: KafkaCluster, pipeline: Pipeline, inputs: list[ReadRecord], outputs: list[ReadRecord]
) -> str:
    """Which keys' counts went wrong and how: each one's emitted counts with where they sit
    (output partition and offset), the batches around them (producer id, epoch, markers),
    the changelog's batches likewise, and what the instances logged."""
    truth = Counter(r.key for r in inputs)
    emitted: dict[bytes | None, list[ReadRecord]] = defaultdict(list)
    for record in outputs:
        emitted[record.key].append(record)
    lines = ["  count went wrong for:"]
    at: dict[int, list[int]] = defaultdict(list)
    for key, n in sorted(truth.items(), key=lambda kv: kv[0] or b""):
        got = emitted.get(key, [])
        values = [int(r.value or b"0") for r in got]
        if values == list(range(1, n + 1)):
            continue
        wrong = [r for i, r in enumerate(got) if values[i] != i + 1]
        first = wrong[0] if wrong else got[-1] if got else None
        lines.append(
            f"    key {key!r}: {n} inputs; emitted {len(values)}, from the first wrong one: "
            + ", ".join(f"{int(r.value or b'0')}@{r.partition}/{r.offset}" for r in wrong[:12])
        )
        if first is not None:
            at[first.partition].append(first.offset)
    lines += _dump_batches(cluster, pipeline.output, dict(list(at.items())[:2]))
    lines += _instance_events(pipeline)
    return "\n".join(lines)


def _instance_events(pipeline: Pipeline, last: int = 80) -> list[str]:
    """Each instance's last ``last`` abort, rewind, rebalance and renewal log lines."""
    lines: list[str] = []
    for index, app in enumerate(pipeline.instances):
        try:
            text = app.log_path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        events = [line for line in text if any(word in line.lower() for word in _LOG_EVENTS)]
        lines.append(f"    instance {index} ({len(text)} log lines), its events:")
        lines += [f"      {line[:300]}" for line in events[-last:]]
    return lines


def _check_count(result: CellResult, inputs: list[ReadRecord], outputs: list[ReadRecord]) -> None:
    truth = Counter(r.key for r in inputs)
    emitted: dict[bytes | None, list[int]] = defaultdict(list)
    for record in outputs:
        emitted[record.key].append(int(record.value or b"0"))
    wrong = 0
    for key, n in truth.items():
        got = emitted.get(key, [])
        if got != list(range(1, n + 1)):
            wrong += 1
            counts = Counter(got)
            result.duplicated += sum(c - 1 for c in counts.values() if c > 1)
            result.lost += sum(1 for i in range(1, n + 1) if i not in counts)
            if got != sorted(got):
                result.out_of_order += 1
    result.wrong_counts = wrong
    result.aborted_seen = sum(len(v) for k, v in emitted.items() if k not in truth)


def run_matrix(
    cluster: KafkaCluster,
    *,
    records: int,
    faults: int,
    cells: Sequence[str] = FAULTS,
    work_dir: Path,
    log: Callable[[str], None] = print,
) -> list[CellResult]:
    """Run every cell in turn on ``cluster``; return the rows of the table."""
    results: list[CellResult] = []
    for seed, fault in enumerate(cells, start=1):
        log(f"cell {fault}: {records:,} records, {faults} fault(s)")
        try:
            results += run_cell(
                cluster,
                fault,
                records=records,
                faults=faults,
                work_dir=work_dir,
                seed=seed,
                log=log,
            )
        except (KafkaException, TimeoutError, AssertionError, RuntimeError) as exc:
            log(f"  {fault} FAILED: {exc!r}")
            for pipeline in ("copy", "count"):
                results.append(CellResult(fault, pipeline, records, 0, notes=[repr(exc)]))
            _ensure_running(cluster)
    return results


def table(results: Sequence[CellResult]) -> str:
    """The results as a Markdown table."""
    lines = [
        "| fault | pipeline | records | faults | lost | duplicated | out of order | "
        "wrong counts | aborted seen | exit codes | open txns | seconds | ok |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        counts = "-" if r.wrong_counts is None else str(r.wrong_counts)
        lines.append(
            f"| {r.fault} | {r.pipeline} | {r.records:,} | {r.faults} | {r.lost} | "
            f"{r.duplicated} | {r.out_of_order} | {counts} | {r.aborted_seen} | "
            f"{','.join(map(str, r.exits)) or '-'} | {'yes' if r.open_transactions else 'no'} | "
            f"{r.seconds:.0f} | {'yes' if r.ok else 'NO: ' + '; '.join(r.notes)} |"
        )
    return "\n".join(lines)
