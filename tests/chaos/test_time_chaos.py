"""Time under SIGKILL and rebalances: window finals and timers fire exactly once.

Every test runs tests/chaos/time_app.py in child processes (RocksDB stores) against the
real broker and reads the outputs back with a ``read_committed`` consumer. The input has
event timestamps: each partition's timestamps move forward with disorder inside the grace
period, a few records arrive later than their window's grace, and each partition ends with
a record far ahead (let through after the kills), so every window and stream-time timer of
the records before it comes due.

The expectation is computed from the input topic as it was produced, partition by
partition in offset order (stream time is the largest timestamp seen so far, which is
deterministic), so each check is exact:

- ``windows`` (tumbling windows, ``.final()``): one output per closed (key, window), with
  the number of its records that were not late; each late record dead-lettered once;
- ``timers``: per key, a stream-time timer at its first record's timestamp + ``DELAY_MS``,
  firing once with the key's exact count; a wall-clock timer per ``wall:`` record, firing
  once, not before its time, even when no record arrives.
"""

from __future__ import annotations

import heapq
import json
import random
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from chaosapps import owned, wait_owned
from confluent_kafka import Producer

from eos.testing.helpers import (
    ReadRecord,
    create_topic,
    read_topic,
    unique_name,
    wait_caught_up,
    wait_no_open_transactions,
)
from eos.testing.process import AppProcess

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

APP = str(Path(__file__).resolve().parent / "time_app.py")
PARTITIONS = 3
SIZE_MS = 10_000
GRACE_MS = 2_000
DISORDER_MS = 1_500
"""Records within a partition are up to this much behind its front: inside the grace."""
DELAY_MS = 5_000
"""A key's stream-time timer is due this long after its first record (since its last timer)."""
STEP_MS = 100
"""How far each partition's event-time front moves per record."""
HELD_BACK = 240
"""Records at the end of a feed kept for the crash phases (see _run_crashing)."""
RELEASE = 10
"""How many of them come per second of a crash phase: a commit or two each, so both phases
get their commits from what is held back."""
FAR_MS = 30 * 60_000
"""The last record of each partition is this far ahead of the start: everything comes due."""
SESSION_MS = "6000"


# -- input ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Timed:
    """One input record: where it goes, its key and value, and its event timestamp."""

    partition: int
    key: str
    value: dict[str, Any]
    timestamp: int


def event_input(
    *, records: int, keys: int, seed: int, late_every: int = 150, wall_every: int = 0
) -> list[Timed]:
    """``records`` records over ``PARTITIONS`` partitions, in a random interleaving.

    Per partition: keys ``k<p>-<i>`` (``keys`` of them), timestamps ``STEP_MS`` apart
    with up to ``DISORDER_MS`` of disorder, about one record in ``late_every`` later than
    its window's grace, with ``wall_every`` a ``wall:`` record (a wall-clock timer a few
    seconds after it is produced: its ``"wall"`` field is filled in by the feeder), and
    a last record ``FAR_MS`` ahead.
    """
    rng = random.Random(seed)
    # An hour and more in the past: the broker refuses timestamps over an hour ahead of
    # its clock, and FAR_MS must stay behind it.
    base = (time.time_ns() // 1_000_000 - 2 * 3_600_000) // SIZE_MS * SIZE_MS
    lanes: list[list[Timed]] = []
    for p in range(PARTITIONS):
        lane: list[Timed] = []
        high = base
        for j in range(records // PARTITIONS):
            front = base + j * STEP_MS
            if wall_every and j % wall_every == wall_every - 1:
                value: dict[str, Any] = {"id": f"{p}-{j}", "wall": None}
                lane.append(Timed(p, f"wall:{p}-{j}", value, front))
                continue
            if j > 50 and rng.randrange(late_every) == 0:
                # Behind its window's end + grace at the current stream time: late.
                ts = high - SIZE_MS - GRACE_MS - rng.randrange(SIZE_MS)
            else:
                ts = front - rng.randrange(DISORDER_MS)
            high = max(high, ts)
            lane.append(Timed(p, f"k{p}-{rng.randrange(keys)}", {"id": f"{p}-{j}"}, ts))
        lane.append(Timed(p, f"end-{p}", {"id": f"{p}-end"}, base + FAR_MS))
        lanes.append(lane)
    order: list[Timed] = []
    cursors = [0] * PARTITIONS
    while True:
        open_lanes = [p for p in range(PARTITIONS) if cursors[p] < len(lanes[p])]
        if not open_lanes:
            return order
        p = rng.choice(open_lanes)
        order.append(lanes[p][cursors[p]])
        cursors[p] += 1


class Feeder:
    """Produces timed records to their partitions in chunks over ``seconds``.

    The last record of each partition (the one far ahead) waits for ``finish`` to be
    set, so a test decides when every window and timer comes due. A ``wall:`` record
    gets ``"wall"`` = the wall-clock time it is produced + ``wall_delay_ms`` (drawn
    from the range): its wall-clock timer is due then. ``held_back`` records at the end
    of the rest are not fed on the clock: :meth:`release` produces them a few at a time
    once the timed feed is over (in order), for a test that needs input at a moment of
    its own; :meth:`join` produces what is left, then the far-ahead ones.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        records: Sequence[Timed],
        seconds: float,
        *,
        wall_delay_ms: tuple[int, int] = (2_000, 8_000),
        seed: int = 0,
        held_back: int = 0,
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.records = list(records)
        self.lasts = [r for r in self.records if r.key.startswith("end-")]
        body = [r for r in self.records if not r.key.startswith("end-")]
        self.body = body[: len(body) - held_back]
        self.held = body[len(self.body) :]
        self.seconds = seconds
        self.wall_delay_ms = wall_delay_ms
        self.rng = random.Random(seed)
        self.finish = threading.Event()
        self.sent = 0
        self.flowing = True
        self.wall_due: dict[str, int] = {}
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        producer = Producer(
            {"bootstrap.servers": self.bootstrap, "enable.idempotence": True, "linger.ms": 5}
        )
        body = self.body
        # Small chunks close together: the app always has a transaction open, so a kill
        # lands in one (with outputs) more often than between two.
        chunks = max(1, int(self.seconds * 10))
        per = -(-len(body) // chunks)
        started = time.monotonic()
        try:
            for n, start in enumerate(range(0, len(body), per)):
                delay = started + n * self.seconds / chunks - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                self._produce(producer, body[start : start + per])
            self.flowing = False
            if not self.finish.wait(300):
                raise TimeoutError("feeder: never told to finish")
            self._produce(producer, self.lasts)
        except BaseException as exc:  # handed to the test thread
            self.errors.append(exc)

    def _produce(self, producer: Producer, records: Sequence[Timed]) -> None:
        for r in records:
            value = r.value
            if "wall" in value:
                due = time.time_ns() // 1_000_000 + self.rng.randint(*self.wall_delay_ms)
                value = {**value, "wall": due}
                self.wall_due[r.key] = due
            producer.produce(
                self.topic, json.dumps(value), r.key, r.partition, timestamp=r.timestamp
            )
        if producer.flush(30):
            raise TimeoutError("feeder: records not delivered in 30 s")
        self.sent += len(records)

    def start(self) -> Feeder:
        self.thread.start()
        return self

    def release(self, count: int) -> int:
        """Once the timed feed is over, produce the next ``count`` held-back records."""
        if self.flowing or not self.held:
            return 0
        chunk, self.held = self.held[:count], self.held[count:]
        producer = Producer({"bootstrap.servers": self.bootstrap, "enable.idempotence": True})
        self._produce(producer, chunk)
        return len(chunk)

    def join(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while self.flowing and self.thread.is_alive() and time.monotonic() < deadline:
            self.thread.join(0.1)  # the timed feed first: the held-back records come after it
        self.release(len(self.held))
        self.finish.set()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "feeder did not finish"
        assert not self.errors, self.errors
        assert self.sent == len(self.records)


# -- the expectation, from the input as produced ---------------------------------


def _in_order(records: Iterable[ReadRecord]) -> list[tuple[ReadRecord, dict[str, Any]]]:
    ordered = sorted(records, key=lambda r: (r.partition, r.offset))
    return [(r, json.loads(r.value or b"{}")) for r in ordered]


def expected_windows(inputs: Sequence[ReadRecord]) -> tuple[dict[tuple[str, int], int], set[str]]:
    """``({(key, window start): count}`` of every window that closed, ``ids of late records)``.

    A record is late when its window's end + grace is at or before its partition's stream
    time (which includes the record); a window closes when stream time reaches its end + grace.
    """
    stream: dict[int, int] = {}
    counts: Counter[tuple[int, str, int]] = Counter()
    late: set[str] = set()
    for record, value in _in_order(inputs):
        assert record.key is not None
        ts = record.timestamp
        stream[record.partition] = max(stream.get(record.partition, ts), ts)
        start = ts - ts % SIZE_MS
        if start + SIZE_MS + GRACE_MS <= stream[record.partition]:
            late.add(value["id"])
            continue
        counts[(record.partition, record.key.decode(), start)] += 1
    closed = {
        (key, start): n
        for (p, key, start), n in counts.items()
        if start + SIZE_MS + GRACE_MS <= stream[p]
    }
    return closed, late


def expected_stream_timers(inputs: Sequence[ReadRecord]) -> dict[tuple[str, int], int]:
    """``{(key, timer timestamp): count sent}`` of every stream-time timer that comes due,
    replaying time_app.FirstPlusDelay per partition in offset order."""
    fired: dict[tuple[str, int], int] = {}
    stream: dict[int, int] = {}
    seen: dict[int, dict[str, int]] = {}
    pending: dict[int, list[tuple[int, str]]] = {}
    for record, value in _in_order(inputs):
        assert record.key is not None
        p, key, ts = record.partition, record.key.decode(), record.timestamp
        stream[p] = max(stream.get(p, ts), ts)
        counts = seen.setdefault(p, {})
        timers = pending.setdefault(p, [])
        if "wall" not in value:
            if counts.get(key, 0) == 0:
                heapq.heappush(timers, (ts + DELAY_MS, key))
            counts[key] = counts.get(key, 0) + 1
        while timers and timers[0][0] <= stream[p]:
            at, due_key = heapq.heappop(timers)
            fired[(due_key, at)] = counts.pop(due_key)
    return fired


# -- checks ----------------------------------------------------------------------


def _output(bootstrap: str, topic: str) -> list[tuple[ReadRecord, dict[str, Any]]]:
    wait_no_open_transactions(bootstrap, topic)
    return _in_order(read_topic(bootstrap, topic))


def check_windows(bootstrap: str, source: str, sink: str, dead_letter: str) -> str:
    """Every closed window's final count is emitted once and exact; late records are not
    counted and are dead-lettered once each. Returns a summary."""
    expected, late = expected_windows(read_topic(bootstrap, source))
    emitted: Counter[tuple[str, int]] = Counter()
    counts: dict[tuple[str, int], int] = {}
    for record, value in _output(bootstrap, sink):
        assert record.key is not None
        window = (record.key.decode(), value["start"])
        assert value["end"] == value["start"] + SIZE_MS, value
        emitted[window] += 1
        counts[window] = value["n"]
    twice = {w: n for w, n in emitted.items() if n > 1}
    missing = sorted(set(expected) - set(counts))
    extra = sorted(set(counts) - set(expected))
    wrong = {w: (counts[w], n) for w, n in expected.items() if w in counts and counts[w] != n}
    dead = Counter(v["id"] for _r, v in _output(bootstrap, dead_letter))
    summary = (
        f"windows expected={len(expected)} emitted={sum(emitted.values())} "
        f"records counted={sum(expected.values())} late={len(late)} "
        f"dead-lettered={sum(dead.values())}"
    )
    print(summary)
    assert not twice, f"windows emitted more than once (window: times): {list(twice.items())[:5]}"
    assert not missing, f"{len(missing)} closed windows never emitted, e.g. {missing[:5]}"
    assert not extra, f"windows emitted that never closed or never had records: {extra[:5]}"
    assert not wrong, (
        f"{len(wrong)} wrong counts (window: (emitted, true)): {list(wrong.items())[:5]}"
    )
    assert late, "the input had no late record: the test lost its point"
    assert set(dead) == late, (
        f"dead-lettered but not late: {sorted(set(dead) - late)[:5]}; "
        f"late but not dead-lettered: {sorted(late - set(dead))[:5]}"
    )
    assert all(n == 1 for n in dead.values()), [i for i, n in dead.items() if n > 1][:5]
    return summary


def check_timers(
    bootstrap: str, source: str, sink: str, wall_due: dict[str, int] | None = None
) -> str:
    """Every stream-time timer that came due fired once with its key's exact count, and
    (with ``wall_due``) every wall-clock timer fired once, not before its time."""
    expected = expected_stream_timers(read_topic(bootstrap, source))
    fired: Counter[tuple[str, int]] = Counter()
    counts: dict[tuple[str, int], int] = {}
    walls: Counter[str] = Counter()
    early: list[tuple[str, int, int, int]] = []
    for record, value in _output(bootstrap, sink):
        assert record.key is not None
        key = record.key.decode()
        if value["kind"] == "wall":
            walls[key] += 1
            # Not before its time: by the app's clock and by the output record's timestamp.
            if value["fired_at"] < value["timer"] or record.timestamp < value["timer"]:
                early.append((key, value["timer"], value["fired_at"], record.timestamp))
            if wall_due is not None:
                assert value["timer"] == wall_due.get(key), (key, value, wall_due.get(key))
            continue
        timer = (key, value["timer"])
        fired[timer] += 1
        counts[timer] = value["n"]
        assert value["stream_time"] >= value["timer"], (key, value)
    twice = {t: n for t, n in fired.items() if n > 1}
    missing = sorted(set(expected) - set(counts))
    extra = sorted(set(counts) - set(expected))
    wrong = {t: (counts[t], n) for t, n in expected.items() if t in counts and counts[t] != n}
    summary = (
        f"stream timers expected={len(expected)} fired={sum(fired.values())} "
        f"wall timers expected={len(wall_due or {})} fired={sum(walls.values())}"
    )
    print(summary)
    assert not twice, f"stream timers fired more than once: {list(twice.items())[:5]}"
    assert not missing, f"{len(missing)} stream timers never fired, e.g. {missing[:5]}"
    assert not extra, f"stream timers fired that were never due: {extra[:5]}"
    assert not wrong, f"{len(wrong)} wrong counts (timer: (sent, true)): {list(wrong.items())[:5]}"
    assert not early, f"wall-clock timers fired before their time (key, due, at, ts): {early[:5]}"
    if wall_due is not None:
        twice_wall = {k: n for k, n in walls.items() if n > 1}
        assert not twice_wall, f"wall-clock timers fired more than once: {twice_wall}"
        assert set(walls) == set(wall_due), (
            f"never fired: {sorted(set(wall_due) - set(walls))[:5]}; "
            f"unexpected: {sorted(set(walls) - set(wall_due))[:5]}"
        )
    return summary


# -- processes -------------------------------------------------------------------


class TimeRun:
    """The input topic, the two applications' ids and topics, and the child processes of
    one test. Every process of one application shares its id and output topics."""

    def __init__(self, bootstrap: str, tmp_path: Path) -> None:
        self.bootstrap = bootstrap
        self.tmp_path = tmp_path
        self.source = create_topic(bootstrap, unique_name("time-in"), PARTITIONS)
        self.windows_id = unique_name("windows")
        self.windows_sink = create_topic(bootstrap, unique_name("windows-out"), PARTITIONS)
        self.dead_letter = create_topic(bootstrap, unique_name("windows-dlq"), 1)
        self.timers_id = unique_name("timers")
        self.timers_sink = create_topic(bootstrap, unique_name("timers-out"), PARTITIONS)
        self.apps: list[AppProcess] = []

    def windows(self, instance: str = "0", **flags: str) -> AppProcess:
        """An unstarted instance of the windows app."""
        return self._app(
            "windows",
            self.windows_id,
            self.windows_sink,
            instance,
            dead_letter=self.dead_letter,
            **flags,
        )

    def timers(self, instance: str = "0", **flags: str) -> AppProcess:
        """An unstarted instance of the timers app."""
        return self._app("timers", self.timers_id, self.timers_sink, instance, **flags)

    def _app(self, mode: str, app_id: str, sink: str, instance: str, **flags: str) -> AppProcess:
        """A time_app.py process; ``flags`` become ``--flag-name value``."""
        args = [
            APP, mode,
            "--bootstrap-servers", self.bootstrap,
            "--input", self.source,
            "--output", sink,
            "--application-id", app_id,
            "--instance-id", instance,
            "--state-dir", str(self.tmp_path / f"state-{mode}-{instance}"),
            "--size-ms", str(SIZE_MS),
            "--grace-ms", str(GRACE_MS),
            "--delay-ms", str(DELAY_MS),
        ]  # fmt: skip
        for key, value in flags.items():
            args += [f"--{key.replace('_', '-')}", value]
        app = AppProcess(args, log_path=self.tmp_path / f"{mode}-{instance}.log")
        self.apps.append(app)
        return app

    def check_windows(self) -> str:
        return check_windows(self.bootstrap, self.source, self.windows_sink, self.dead_letter)

    def check_timers(self, wall_due: dict[str, int] | None = None) -> str:
        return check_timers(self.bootstrap, self.source, self.timers_sink, wall_due)

    def kill_all(self) -> None:
        for app in self.apps:
            app.kill()


def _wait_assigned(app: AppProcess, timeout: float = 90.0) -> None:
    """Block until the current start of ``app`` logged an assignment."""
    app.wait_for_current_log("eos.engine: assigned", timeout)
    assert app.alive(), f"{app.log_path} exited:\n{app.log_tail()}"


def _run_crashing(
    app: AppProcess, n: int, timeout: float = 60.0, feeder: Feeder | None = None
) -> None:
    """Run ``app``'s instance once with ``--crash-after-kafka-commit n`` (same state, log
    and instance id): it SIGKILLs itself on its n-th commit with store writes, after the
    Kafka commit and before the local store write. Returns when it has. Commits need
    input: once ``feeder``'s timed feed is over (a slow machine gets there first), its
    held-back records come a few at a time until the instance has crashed."""
    crashing = AppProcess(
        [*app.args[1:], "--crash-after-kafka-commit", str(n)], log_path=app.log_path
    )
    crashing.starts = app.starts
    crashing.start()
    assert crashing.proc is not None
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                code = crashing.proc.wait(1.0)
                break
            except subprocess.TimeoutExpired:
                if time.monotonic() >= deadline:
                    code = crashing.wait(0.1)  # raises, with its threads' stacks in the log
                if feeder is not None:
                    feeder.release(RELEASE)
    finally:
        app.starts = crashing.starts
    assert code == -9, f"exit code {code}, expected the crash hook's SIGKILL:\n{app.log_tail()}"


def _kill_repeatedly(
    app: AppProcess, feeder: Feeder, kills: int, rng: random.Random, crash_after: Sequence[int]
) -> tuple[list[float], int]:
    """SIGKILL ``app`` ``kills`` times, each a random moment after its assignment, and
    restart it; after the kills numbered in ``crash_after`` (from 1) the restart first runs
    once with the crash hook (:func:`_run_crashing`). Returns the delays and how many
    kills (of either kind) came while the feeder still fed."""
    delays: list[float] = []
    flowing = 0
    for number in range(1, kills + 1):
        _wait_assigned(app)
        delay = rng.uniform(0.2, 1.5)
        time.sleep(delay)
        flowing += feeder.flowing
        app.kill()
        delays.append(round(delay, 2))
        if number in crash_after:
            _run_crashing(app, rng.randint(2, 6), feeder=feeder)
            flowing += feeder.flowing
        app.start()
    return delays, flowing


def _wait_for(what: str, condition: Any, timeout: float, apps: Sequence[AppProcess]) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        for app in apps:
            assert app.alive(), f"{app.log_path} exited:\n{app.log_tail()}"
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached in {timeout}s")
        time.sleep(0.25)


def _count(bootstrap: str, topic: str) -> int:
    return len(read_topic(bootstrap, topic))


def _aborted_outputs(bootstrap: str, topic: str) -> int:
    """Records of ``topic`` in aborted transactions (what the kills cut short)."""
    wait_no_open_transactions(bootstrap, topic)
    return len(read_topic(bootstrap, topic, isolation_level="read_uncommitted")) - _count(
        bootstrap, topic
    )


# -- 1. one instance, SIGKILLed again and again ------------------------------------


def _kill_while_feeding(run: TimeRun, app: AppProcess, app_id: str, sink: str, seed: int) -> str:
    """Feed 3,000 timestamped records over 20 s; meanwhile SIGKILL ``app`` at 5 random
    moments and have it SIGKILL itself twice right after a Kafka commit; then let the
    far-ahead records through, wait until it caught up, stop it cleanly."""
    records = event_input(records=3_000, keys=4, seed=seed)
    feeder = Feeder(run.bootstrap, run.source, records, seconds=20.0, held_back=HELD_BACK)
    try:
        app.start()
        _wait_assigned(app)
        feeder.start()
        delays, flowing = _kill_repeatedly(app, feeder, 5, random.Random(seed), (2, 4))
        feeder.join()
        wait_caught_up(run.bootstrap, app_id, run.source, timeout=120)
        assert app.terminate() == 0, app.log_tail()
    finally:
        run.kill_all()
    assert app.starts == 8
    return (
        f"kills={len(delays)} random + 2 after a Kafka commit, while feeding={flowing} "
        f"delays={delays} outputs of aborted transactions={_aborted_outputs(run.bootstrap, sink)}"
    )


def test_window_finals_exact_under_repeated_sigkill(bootstrap: str, tmp_path: Path) -> None:
    """3,000 timestamped records (disorder within grace, some late) with the windows app
    SIGKILLed 7 times mid-stream: every closed tumbling window's final count is emitted
    exactly once and is exact, and every late record is dead-lettered once, never counted."""
    started = time.monotonic()
    run = TimeRun(bootstrap, tmp_path)
    kills = _kill_while_feeding(
        run, run.windows(commit_interval_ms="250"), run.windows_id, run.windows_sink, seed=21
    )
    summary = run.check_windows()
    print(f"{kills}; {summary}; seconds={time.monotonic() - started:.1f}")


def test_stream_time_timers_fire_once_under_repeated_sigkill(
    bootstrap: str, tmp_path: Path
) -> None:
    """3,000 timestamped records with the timers app SIGKILLed 7 times mid-stream: every
    stream-time timer (a key's first record + 5 s of event time) fires exactly once, with
    the key's exact count at that stream time."""
    started = time.monotonic()
    run = TimeRun(bootstrap, tmp_path)
    kills = _kill_while_feeding(
        run, run.timers(commit_interval_ms="250"), run.timers_id, run.timers_sink, seed=22
    )
    summary = run.check_timers()
    print(f"{kills}; {summary}; seconds={time.monotonic() - started:.1f}")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def test_wall_clock_timers_fire_once_after_their_time_without_input(
    bootstrap: str, tmp_path: Path
) -> None:
    """Wall-clock timers scheduled 8-20 s ahead, then no more input, with the app SIGKILLed
    before any is due, right after the Kafka commit of the first it fires, while they fire,
    while it is down past all of them, and after all fired: each fires exactly once and
    never before its time."""
    started = time.monotonic()
    run = TimeRun(bootstrap, tmp_path)
    app = run.timers()
    count = 120
    sink = run.timers_sink

    def wall(i: str, partition: int) -> Timed:
        return Timed(partition, f"wall:{i}", {"id": i, "wall": None}, _now_ms())

    try:
        app.start()
        _wait_assigned(app)
        feeder = Feeder(
            bootstrap,
            run.source,
            [wall(f"{i:03d}", i % PARTITIONS) for i in range(count)],
            seconds=0.0,
            wall_delay_ms=(8_000, 20_000),
        ).start()
        feeder.join()
        first_due, last_due = min(feeder.wall_due.values()), max(feeder.wall_due.values())
        # (1) Killed once the timers are committed (the input's offsets are), before any is due.
        wait_caught_up(bootstrap, run.timers_id, run.source, timeout=60)
        before = _count(bootstrap, sink)
        killed_before_due = _now_ms() < first_due
        app.kill()
        # (2) Restarted with the crash hook: it dies right after the Kafka commit of the
        # first timers it fires, before its local store forgets them ...
        _run_crashing(app, 1, timeout=60)
        fired_at_crash = _count(bootstrap, sink)
        # ... and restarted again, killed while it fires them: once a third are due.
        app.start()
        app.wait_for_current_log("processing them", 60)
        assert app.alive(), app.log_tail()
        kill_at = sorted(feeder.wall_due.values())[count // 3]
        while _now_ms() < kill_at:
            time.sleep(0.05)
        killed_at = _now_ms()
        app.kill()
        pending_at_kill = sum(due > killed_at for due in feeder.wall_due.values())
        # (3) Down until every timer is due: the restart fires them with no input.
        while _now_ms() <= last_due + 500:
            time.sleep(0.2)
        app.start()
        _wait_for("every timer fired", lambda: _count(bootstrap, sink) >= count, 60, [app])
        # (4) Killed after all fired, and restarted: nothing fires again. A probe timer due
        # at once shows the restarted instance has run its due wall-clock timers.
        app.kill()
        app.start()
        _wait_assigned(app)
        probe = Feeder(
            bootstrap, run.source, [wall("probe", 0)], seconds=0.0, wall_delay_ms=(0, 0)
        ).start()
        probe.join()
        _wait_for("the probe fired", lambda: _count(bootstrap, sink) > count, 60, [app])
        assert app.terminate() == 0, app.log_tail()
    finally:
        run.kill_all()
    summary = run.check_timers({**feeder.wall_due, **probe.wall_due})
    print(
        f"outputs at the 1st kill={before} (before the first was due: {killed_before_due}), "
        f"at the crash after a commit={fired_at_crash}, not yet due at the 2nd kill="
        f"{pending_at_kill}; "
        f"{summary}; "
        f"seconds={time.monotonic() - started:.1f}"
    )
    assert killed_before_due and before == 0
    assert 0 < fired_at_crash < count, "the crash after a commit came after every timer fired"
    assert pending_at_kill > 0, "every timer was due before the 2nd kill: it tested nothing"


# -- 2. two instances, one SIGKILLed and restarted ----------------------------------


def test_two_instances_one_killed_and_restarted_keep_time_exactly_once(
    bootstrap: str, tmp_path: Path
) -> None:
    """Two instances each of the windows app and the timers app share the partitions of
    one timestamped input; instance 1 of each is SIGKILLed while records flow, its
    partitions move to instance 0, and it restarts and takes some back: window finals,
    stream-time timers and wall-clock timers are each emitted exactly once and exact."""
    started = time.monotonic()
    run = TimeRun(bootstrap, tmp_path)
    flags = {"session_timeout_ms": SESSION_MS, "transaction_timeout_ms": "5000"}
    w0, w1 = run.windows("0", **flags), run.windows("1", **flags)
    t0, t1 = run.timers("0", **flags), run.timers("1", **flags)
    records = event_input(records=3_000, keys=4, seed=23, wall_every=40)
    feeder = Feeder(bootstrap, run.source, records, seconds=36.0, seed=23)
    everything = set(range(PARTITIONS))

    def walls_fired() -> int:
        return sum(
            v["kind"] == "wall" for _r, v in _in_order(read_topic(bootstrap, run.timers_sink))
        )

    try:
        for app in (w0, t0, w1, t1):
            app.start()
        feeder.start()
        # Both instances of each app own partitions: they share the input.
        for app in (w0, t0, w1, t1):
            wait_owned(app, bool, "an assignment")
        time.sleep(random.Random(23).uniform(0.5, 2.0))
        assert feeder.flowing, "the feeder finished before the kill: slow machine?"
        owned_at_kill = (sorted(owned(w1)), sorted(owned(t1)))
        w1.kill()
        t1.kill()
        # Instance 0 takes the dead one's partitions after its session times out ...
        handover = max(
            wait_owned(app, lambda ps: ps == everything, "instance 0 owning every partition")
            for app in (w0, t0)
        )
        # ... and gives some back when it restarts, while records still flow.
        w1.start()
        t1.start()
        for app in (w1, t1):
            wait_owned(app, bool, "the restarted instance's assignment")
        flowing_at_restart = feeder.flowing
        feeder.join()
        wait_caught_up(bootstrap, run.windows_id, run.source, timeout=120)
        wait_caught_up(bootstrap, run.timers_id, run.source, timeout=120)
        walls = len(feeder.wall_due)
        _wait_for("every wall-clock timer fired", lambda: walls_fired() >= walls, 60, run.apps)
        for app in (w0, w1, t0, t1):
            assert app.terminate() == 0, app.log_tail()
    finally:
        run.kill_all()
    window_summary = run.check_windows()
    timer_summary = run.check_timers(feeder.wall_due)
    print(
        f"instance 1 owned (windows, timers) {owned_at_kill} when killed; handover took "
        f"{handover:.1f}s; still feeding at the restart: {flowing_at_restart}; "
        f"{window_summary}; {timer_summary}; seconds={time.monotonic() - started:.1f}"
    )
