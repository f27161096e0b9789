"""State stores under SIGKILL and rebalances: counts stay exact, restores stay small.

Every test runs examples/count_per_key.py in child processes against the real
broker. That processor keeps ``counts[key]`` in a changelogged store and sends
each new count, so for a key seen N times in the input the output read with a
``read_committed`` consumer must be exactly ``"1", "2", ..., "N"`` in order,
and the store must end at N: a lost, duplicated or re-applied store write
shows up as a gap, a repeat or a wrong final value.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from eos.state.changelog import ChangelogRestorer, RestoreTask, restore_consumer_settings
from eos.state.memory import MemoryStore
from eos.state.rocksdb import RocksDBStore
from eos.state.topics import changelog_topic
from eos.testing.helpers import (
    create_topic,
    read_topic,
    unique_name,
    wait_caught_up,
    wait_no_open_transactions,
)
from eos.testing.process import AppProcess

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

EXAMPLE = str(Path(__file__).resolve().parents[2] / "examples" / "count_per_key.py")
FAULT_APP = str(Path(__file__).resolve().parent / "fault_app.py")
PARTITIONS = 4
STORE = "counts"

_RESTORING = re.compile(
    r"restoring (?P<store>[\w.-]+)\[(?P<p>\d+)\] from \S+ offsets (?P<start>\d+)\.\.(?P<end>\d+):"
)
_RESTORED = re.compile(
    r"restored (?P<store>[\w.-]+)\[(?P<p>\d+)\] in [\d.]+s, up to changelog offset \d+: "
    r"\S+: (?P<n>[\d,]+)(?:/[\d,]+)? records"
)
_ASSIGNED = re.compile(r"eos\.engine: assigned (?P<tps>.*)$", re.MULTILINE)


# -- helpers ------------------------------------------------------------------


class Feeder:
    """Produces ``total`` records with keys drawn from ``keys`` keys, in chunks over ``seconds``."""

    def __init__(
        self, bootstrap: str, topic: str, total: int, keys: int, seconds: float, seed: int
    ) -> None:
        rng = random.Random(seed)
        self.records = [(f"k{rng.randrange(keys):04d}", f"v{i:06d}") for i in range(total)]
        self.bootstrap = bootstrap
        self.topic = topic
        self.seconds = seconds
        self.sent = 0
        self.elapsed = 0.0
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        # One producer for every chunk, paced by the clock: helpers.produce()
        # builds and destroys a producer per call (about 0.5 s each).
        producer = Producer(
            {"bootstrap.servers": self.bootstrap, "enable.idempotence": True, "linger.ms": 5}
        )
        chunks = 30
        per = -(-len(self.records) // chunks)
        started = time.monotonic()
        try:
            for n, start in enumerate(range(0, len(self.records), per)):
                delay = started + n * self.seconds / chunks - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                chunk = self.records[start : start + per]
                for key, value in chunk:
                    producer.produce(self.topic, value, key)
                if producer.flush(30):
                    raise TimeoutError("feeder: records not delivered in 30 s")
                self.sent += len(chunk)
        except BaseException as exc:  # handed to the test thread
            self.errors.append(exc)
        self.elapsed = time.monotonic() - started

    def start(self) -> Feeder:
        self.thread.start()
        return self

    def join(self, timeout: float = 120.0) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "feeder did not finish"
        assert not self.errors, self.errors
        assert self.sent == len(self.records)


class CountRun:
    """Topics, application id, processes and checks of one counting test."""

    def __init__(self, bootstrap: str, tmp_path: Path) -> None:
        self.bootstrap = bootstrap
        self.tmp_path = tmp_path
        self.app_id = unique_name("count")
        self.source = create_topic(bootstrap, unique_name("in"), PARTITIONS)
        self.sink = create_topic(bootstrap, unique_name("out"), PARTITIONS)
        self.changelog = changelog_topic(self.app_id, STORE)

    def state_dir(self, instance: str = "0") -> str:
        return str(self.tmp_path / f"state-{instance}")

    def app(
        self,
        instance: str = "0",
        *,
        backend: str = "rocksdb",
        faults: list[str] | None = None,
        batch: bool = False,
        **flags: str,
    ) -> AppProcess:
        """An unstarted count_per_key.py process; ``flags`` become ``--flag-name value``;
        ``faults`` are fault_app.py options (the process then runs through it); ``batch``:
        the count as an eos.BatchProcessor (``--batch``)."""
        prefix = [FAULT_APP, "count_per_key", *faults, "--"] if faults else [EXAMPLE]
        args = [
            *prefix,
            "--bootstrap-servers", self.bootstrap,
            "--input", self.source,
            "--output", self.sink,
            "--application-id", self.app_id,
            "--instance-id", instance,
            "--state-dir", self.state_dir(instance),
            "--backend", backend,
        ]  # fmt: skip
        for key, value in flags.items():
            args += [f"--{key.replace('_', '-')}", value]
        if batch:
            args.append("--batch")
        return AppProcess(args, log_path=self.tmp_path / f"app-{instance}.log")

    def feeder(self, total: int, keys: int, seconds: float, seed: int) -> Feeder:
        return Feeder(self.bootstrap, self.source, total, keys, seconds, seed)

    def caught_up(self, timeout: float = 120.0) -> None:
        wait_caught_up(self.bootstrap, self.app_id, self.source, timeout=timeout)

    def true_counts(self) -> Counter[str]:
        """Records per key in the input topic as it is now."""
        return Counter(r.key.decode() for r in read_topic(self.bootstrap, self.source) if r.key)

    def emitted(self) -> dict[str, list[str]]:
        """Counts sent per key, in read order (one key lives in one partition)."""
        wait_no_open_transactions(self.bootstrap, self.sink)
        out: dict[str, list[str]] = defaultdict(list)
        for record in read_topic(self.bootstrap, self.sink):
            assert record.key is not None and record.value is not None
            out[record.key.decode()].append(record.value.decode())
        return out

    def assert_counts_exact(self) -> Counter[str]:
        """Every key's outputs are exactly "1".."N" once each, in order; returns the true counts."""
        truth = self.true_counts()
        emitted = self.emitted()
        wrong = [
            (key, len(emitted.get(key, [])), n)
            for key, n in truth.items()
            if emitted.get(key) != [str(i) for i in range(1, n + 1)]
        ]
        extra = sorted(set(emitted) - set(truth))
        outputs = sum(len(v) for v in emitted.values())
        print(f"inputs={sum(truth.values())} keys={len(truth)} outputs={outputs}")
        assert not extra, f"outputs for keys never sent: {extra[:5]}"
        assert not wrong, (
            f"{len(wrong)} keys with wrong counts, e.g. (key, emitted, true): {wrong[:5]}"
        )
        return truth

    def local_store(self, instance: str = "0") -> dict[str, int]:
        """Every RocksDB partition of ``instance``'s counts store, json-decoded (app stopped)."""
        contents: dict[str, int] = {}
        for partition in range(PARTITIONS):
            path = Path(self.state_dir(instance), self.app_id, STORE, str(partition))
            if not path.exists():
                continue
            store = RocksDBStore(str(path), STORE, partition)
            try:
                for key, value in store.iterate():
                    contents[json.loads(key)] = json.loads(value)
            finally:
                store.close()
        return contents

    def checkpoints(self, instance: str = "0") -> dict[int, int]:
        """The changelog checkpoint of each local RocksDB partition (app stopped or dead)."""
        result: dict[int, int] = {}
        for partition in range(PARTITIONS):
            path = Path(self.state_dir(instance), self.app_id, STORE, str(partition))
            store = RocksDBStore(str(path), STORE, partition)
            try:
                offset = store.changelog_offset()
            finally:
                store.close()
            assert offset is not None, f"store partition {partition} has no checkpoint"
            result[partition] = offset
        return result

    def changelog_store(self) -> dict[str, int]:
        """The counts a fresh instance would get: the changelog restored into empty stores
        through the engine's own restorer."""
        wait_no_open_transactions(self.bootstrap, self.changelog)
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        settings = restore_consumer_settings(
            {"bootstrap.servers": self.bootstrap}, self.app_id, unique_name("check")
        )
        restorer = ChangelogRestorer(admin, settings, stall_timeout_s=30)
        tasks = [
            RestoreTask(STORE, p, self.changelog, MemoryStore(STORE, p), "<memory>")
            for p in range(PARTITIONS)
        ]
        restorer.restore(tasks)
        contents: dict[str, int] = {}
        for task in tasks:
            for key, value in task.backend.iterate():
                contents[json.loads(key)] = json.loads(value)
        return contents


def _segments(app: AppProcess) -> list[str]:
    """The log of each start of ``app``, in order."""
    text = app.log_path.read_text(errors="replace") if app.log_path.exists() else ""
    return re.split(r"\n=== start \d+ ===\n", text)[1:]


def _restores(segment: str) -> dict[int, tuple[int, int, int]]:
    """``{partition: (from offset, to offset, records restored)}`` of one start's log."""
    ranges = {int(m["p"]): (int(m["start"]), int(m["end"])) for m in _RESTORING.finditer(segment)}
    found: dict[int, tuple[int, int, int]] = {}
    for m in _RESTORED.finditer(segment):
        p = int(m["p"])
        start, end = ranges[p]
        found[p] = (start, end, found.get(p, (0, 0, 0))[2] + int(m["n"].replace(",", "")))
    return found


def _restored_per_start(app: AppProcess) -> list[int]:
    return [sum(n for _s, _e, n in _restores(seg).values()) for seg in _segments(app)]


def _assigned(segment: str) -> list[set[int]]:
    """Every assignment logged in one start's log, as sets of partitions."""
    return [
        {int(p) for p in re.findall(r"\[(\d+)\]", m["tps"])} for m in _ASSIGNED.finditer(segment)
    ]


def _wait_current(
    app: AppProcess, predicate: Callable[[str], bool], what: str, timeout: float = 60.0
) -> str:
    """Block until ``predicate(log of the current start)`` holds; return that log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        segments = _segments(app)
        if segments and predicate(segments[-1]):
            return segments[-1]
        if not app.alive():
            break
        time.sleep(0.05)
    raise TimeoutError(f"{what} not seen in {app.log_path}:\n{app.log_tail()}")


def _wait_assigned(app: AppProcess, timeout: float = 60.0) -> str:
    return _wait_current(app, lambda s: "eos.engine: assigned" in s, "assignment", timeout)


def _kill_repeatedly(
    app: AppProcess, kills: int, rng: random.Random, low: float = 0.2, high: float = 1.5
) -> list[float]:
    """SIGKILL ``app`` ``kills`` times, each a random delay after its assignment, restarting
    it each time; returns the delays."""
    delays = []
    for _ in range(kills):
        _wait_assigned(app, timeout=90)
        delay = rng.uniform(low, high)
        time.sleep(delay)
        app.kill()
        delays.append(round(delay, 2))
        app.start()
    return delays


# -- (a) and (d): SIGKILL at random moments ------------------------------------


def _kill_and_count(
    run: CountRun,
    *,
    records: int,
    keys: int,
    kills: int,
    backend: str,
    seed: int,
    commit_interval_ms: str = "100",
    batch: bool = False,
) -> tuple[Counter[str], AppProcess]:
    rng = random.Random(seed)
    # A small batch limit bounds what one restart may have to replay.
    app = run.app(
        backend=backend,
        batch=batch,
        max_batch_records="2000",
        commit_interval_ms=commit_interval_ms,
    ).start()
    feeder = run.feeder(records, keys, seconds=15.0, seed=seed).start()
    started = time.monotonic()
    try:
        delays = _kill_repeatedly(app, kills, rng)
        feeder.join()
        run.caught_up(timeout=120)
        assert app.terminate() == 0, app.log_tail()
    finally:
        app.kill()
    elapsed = time.monotonic() - started
    truth = run.assert_counts_exact()
    restored = _restored_per_start(app)
    # Outputs of transactions the kills left open, aborted when the restart fenced them.
    aborted = len(read_topic(run.bootstrap, run.sink, isolation_level="read_uncommitted")) - records
    print(
        f"{backend}: records={records} keys={len(truth)} kills={kills} seed={seed} "
        f"kill delays after assignment={delays} aborted outputs={aborted} "
        f"restored per start={restored} "
        f"feed seconds={feeder.elapsed:.1f} seconds={elapsed:.1f}"
    )
    assert sum(truth.values()) == records
    assert app.starts == kills + 1
    return truth, app


def test_sigkill_10x_rocksdb_counts_and_store_exact(bootstrap: str, tmp_path: Path) -> None:
    """50,000 records over 1,000 keys with the RocksDB app SIGKILLed at 10 random moments:
    every key's counts are emitted exactly 1..N in order, and the local stores and the
    changelog both end at the true counts."""
    run = CountRun(bootstrap, tmp_path)
    truth, app = _kill_and_count(
        run, records=50_000, keys=1_000, kills=10, backend="rocksdb", seed=11
    )
    # A restart replays only what the killed process committed to Kafka but had
    # not yet applied locally: at most one transaction (max-batch-records).
    restored = _restored_per_start(app)
    assert restored[0] == 0
    assert all(n <= 2000 for n in restored), restored
    local = run.local_store()
    from_changelog = run.changelog_store()
    print(f"local store keys={len(local)} changelog keys={len(from_changelog)}")
    assert local == dict(truth)
    assert from_changelog == dict(truth)


def test_sigkill_5x_batch_processor_counts_and_store_exact(bootstrap: str, tmp_path: Path) -> None:
    """The count as an eos.BatchProcessor (count_per_key.py --batch), 30,000 records over
    500 keys, SIGKILLed at 5 random moments: every key's counts are emitted exactly 1..N
    in order, and the local stores and the changelog both end at the true counts."""
    run = CountRun(bootstrap, tmp_path)
    # A longer commit interval keeps a transaction open most of the time, so the kills
    # leave open transactions (and batches in them) behind.
    truth, _app = _kill_and_count(
        run,
        records=30_000,
        keys=500,
        kills=5,
        backend="rocksdb",
        seed=17,
        batch=True,
        commit_interval_ms="500",
    )
    local = run.local_store()
    from_changelog = run.changelog_store()
    print(f"local store keys={len(local)} changelog keys={len(from_changelog)}")
    assert local == dict(truth)
    assert from_changelog == dict(truth)


def test_sigkill_3x_memory_counts_and_changelog_exact(bootstrap: str, tmp_path: Path) -> None:
    """5,000 records with the memory-store app SIGKILLed at 3 random moments: counts are emitted
    exactly 1..N in order, each start restores the whole changelog, and it ends at the true
    counts."""
    run = CountRun(bootstrap, tmp_path)
    # At this input rate transactions are short; a longer commit interval keeps
    # one open most of the time, so the kills leave open transactions behind.
    truth, app = _kill_and_count(
        run, records=5_000, keys=200, kills=3, backend="memory", seed=5, commit_interval_ms="500"
    )
    restored = _restored_per_start(app)
    # Nothing survives a restart: every start restores the whole (growing)
    # changelog, from offset 0 of every partition.
    assert restored[0] == 0
    assert restored == sorted(restored), restored
    for segment in _segments(app)[1:]:
        assert {start for start, _end, _n in _restores(segment).values()} == {0}
    assert restored[-1] > 0
    assert run.changelog_store() == dict(truth)


# -- (b) a restart restores only what the local store misses --------------------


def test_restart_after_kill_restores_only_the_unapplied_tail(
    bootstrap: str, tmp_path: Path
) -> None:
    """A process killed right after a Kafka commit, before its local store write, restarts by
    restoring exactly the committed changelog records beyond its local checkpoints, a small
    fraction of the changelog; counts stay exact.

    (A clean stop restores 0 records: tests/integration/test_state_restore.py,
    test_clean_restart_restores_nothing.)"""
    run = CountRun(bootstrap, tmp_path)
    batch = 500
    feeder = run.feeder(12_000, 300, seconds=6.0, seed=2).start()
    # Dies on its 12th commit with store writes, after the Kafka commit and
    # before the local write: the window in which local state lags the changelog.
    crashing = run.app(
        faults=["--crash-after-kafka-commit", "12"], max_batch_records=str(batch)
    ).start()
    assert crashing.wait(90) == -9, crashing.log_tail()
    checkpoints = run.checkpoints()
    # The same instance, log and state directory, without the crash hook.
    app = run.app(max_batch_records=str(batch))
    app.starts = crashing.starts
    app.start()
    try:
        # Every partition is behind its changelog end (at least by a commit
        # marker), so each logs one "restored" line.
        segment = _wait_current(app, lambda s: len(_restores(s)) == PARTITIONS, "restores")
        feeder.join()
        run.caught_up()
        assert app.terminate() == 0, app.log_tail()
    finally:
        app.kill()
    restores = _restores(segment)
    restored = {p: n for p, (_start, _end, n) in restores.items()}
    total = sum(restored.values())
    wait_no_open_transactions(bootstrap, run.changelog)
    changelog = read_topic(bootstrap, run.changelog)
    ends = {p: end for p, (_start, end, _n) in restores.items()}
    # What the restore had to apply: committed records from each local
    # checkpoint up to the end the restore took at assignment.
    expected = {
        p: sum(1 for r in changelog if r.partition == p and checkpoints[p] <= r.offset < ends[p])
        for p in ends
    }
    size = sum(1 for r in changelog if r.offset < ends[r.partition])
    print(
        f"changelog records at restart={size} local checkpoints={checkpoints} "
        f"restored={restored} (total {total}) expected={expected}"
    )
    assert {p: start for p, (start, _end, _n) in restores.items()} == checkpoints
    assert restored == expected
    assert 0 < total <= batch
    # The tail of one transaction, against eleven committed before it (each writes one
    # changelog record per key it updated).
    assert total * 4 < size
    truth = run.assert_counts_exact()
    assert run.local_store() == dict(truth)


# -- (c) rebalance: another instance restores and continues ---------------------


@pytest.mark.parametrize("stop", ["sigterm", "sigkill"])
def test_rebalance_moves_store_partitions_to_the_other_instance(
    bootstrap: str, tmp_path: Path, stop: str
) -> None:
    """When instance A stops (SIGTERM) or dies (SIGKILL), instance B restores A's store
    partitions from the changelog and continues: every key's counts are exactly 1..N in order."""
    run = CountRun(bootstrap, tmp_path)
    feeder = run.feeder(20_000, 500, seconds=16.0, seed=3).start()
    # Static membership: a stopped instance's partitions move when its session
    # times out. A short transaction timeout lets the broker abort the open
    # transaction a SIGKILLed A leaves on the changelog, which B's restore waits for.
    a = run.app("0", session_timeout_ms="6000", transaction_timeout_ms="5000").start()
    b = run.app("1", session_timeout_ms="6000", transaction_timeout_ms="5000")
    started = time.monotonic()
    try:
        _wait_assigned(a)
        time.sleep(2.0)
        b.start()
        # B joins: the partitions are split between A and B.
        _wait_current(b, lambda s: any(_assigned(s)), "a first assignment of B", timeout=60)
        time.sleep(2.0)
        stopped = time.monotonic()
        if stop == "sigterm":
            assert a.terminate() == 0, a.log_tail()
        else:
            a.kill()
        # Static membership: A's partitions move after its session times out.
        _wait_current(
            b,
            lambda s: any(ps == set(range(PARTITIONS)) for ps in _assigned(s)),
            "B owning every partition",
            timeout=60,
        )
        handover = time.monotonic() - stopped
        feeder.join()
        run.caught_up(timeout=120)
        assert b.terminate() == 0, b.log_tail()
    finally:
        a.kill()
        b.kill()
    elapsed = time.monotonic() - started
    segment = _segments(b)[-1]
    assignments = _assigned(segment)
    first_b = next((s for s in assignments if s), set())
    moved = set(range(PARTITIONS)) - first_b
    restores = _restores(segment)
    print(
        f"{stop}: records=20000 B first got {sorted(first_b)}, took over {sorted(moved)} "
        f"{handover:.1f}s after A stopped; B's assignments={[sorted(s) for s in assignments]} "
        f"B restored={ {p: n for p, (_s, _e, n) in sorted(restores.items())} } "
        f"seconds={elapsed:.1f}"
    )
    assert first_b and moved, assignments
    # A processed its partitions before it stopped, so B rebuilt them from the changelog.
    assert all(restores.get(p, (0, 0, 0))[2] > 0 for p in moved), restores
    truth = run.assert_counts_exact()
    assert run.local_store("1") == dict(truth)
