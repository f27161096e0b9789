"""Timers and punctuation on a real broker, read back read_committed.

Each test runs an Application in-process and checks what a read_committed
consumer sees: every stream-time timer fired exactly once, in timestamp
order, once stream time reached it; a restart neither fires a timer again nor
forgets one (stream time and timers are committed state); wall-clock timers
and punctuations fire with no input at all.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable

import pytest
from apprunner import AppThread, application, wait_committed
from confluent_kafka import Producer

import eos
from eos.testing.helpers import ReadRecord, read_topic, unique_name, watermarks

pytestmark = pytest.mark.integration


class Expiry(eos.Processor):
    """Per key: a stream-time timer 30 s after its first record; the timer reports the count."""

    stores = [eos.Store("seen", key_serde="string", value_serde="json")]

    def __init__(self, output: str) -> None:
        self.output = output

    def process(self, record: eos.Record, ctx: eos.Context) -> None:
        seen = ctx.store("seen")
        count = seen.get(record.key, 0)
        if count == 0:
            ctx.timers.schedule(record.key, record.timestamp + 30_000)
        seen[record.key] = count + 1

    def on_timer(self, key: object, timestamp: int, ctx: eos.Context) -> None:
        seen = ctx.store("seen")
        count = seen[key]
        del seen[key]
        ctx.send(
            self.output,
            {"key": key, "timer": timestamp, "count": count, "stream_time": ctx.stream_time},
            key=key,
        )


class WallTimer(eos.Processor):
    """Schedules a wall-clock timer 1 s after each record; the timer sends the key."""

    def __init__(self, output: str) -> None:
        self.output = output

    def process(self, record: eos.Record, ctx: eos.Context) -> None:
        ctx.timers.schedule(record.key, time.time_ns() // 1_000_000 + 1_000, kind="wall_clock")

    def on_timer(self, key: object, timestamp: int, ctx: eos.Context) -> None:
        ctx.send(self.output, {"key": key, "fired_late_ms": _now_ms() - timestamp}, key=key)


class Ticker(eos.Processor):
    """A wall-clock punctuation every 200 ms per partition; never needs a record."""

    def __init__(self, output: str) -> None:
        self.output = output

    def on_assign(self, partitions: list[eos.TopicPartition], ctx: eos.Context) -> None:
        ctx.schedule(200, self._tick)

    def _tick(self, timestamp: int, ctx: eos.Context) -> None:
        ctx.send(self.output, {"partition": ctx.partition, "at": timestamp})

    def process(self, record: eos.Record, ctx: eos.Context) -> None:
        pass


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _produce(bootstrap: str, topic: str, records: Iterable[tuple[str, int]]) -> None:
    """``(key, timestamp_ms)`` records, value ``{"ts": timestamp}``."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for key, timestamp in records:
        producer.produce(topic, json.dumps({"ts": timestamp}), key, timestamp=timestamp)
    assert producer.flush(30) == 0


def _wait_for(
    read: Callable[[], list[ReadRecord]], done: Callable[[list[ReadRecord]], bool], timeout: float
) -> list[ReadRecord]:
    deadline = time.monotonic() + timeout
    while True:
        records = read()
        if done(records) or time.monotonic() > deadline:
            return records
        time.sleep(0.25)


def _values(records: list[ReadRecord]) -> list[dict[str, object]]:
    return [json.loads(r.value or b"null") for r in records]


def test_stream_time_timers_fire_once_in_order_and_survive_a_restart(
    bootstrap: str, new_topic: Callable[..., str], app_threads: list[AppThread], tmp_path: object
) -> None:
    source = new_topic("time-in", partitions=2)
    output = new_topic("time-out", partitions=2)
    app_id = unique_name("timers")
    base = 1_700_000_000_000
    keys = [f"k{i}" for i in range(20)]
    # Each key: records at base + i*1000 (+ 0, 5, 10 s): its timer is due at base + i*1000 + 30 s.
    first = [(k, base + i * 1_000 + d) for d in (0, 5_000, 10_000) for i, k in enumerate(keys)]

    def start() -> AppThread:
        app = application(
            bootstrap,
            app_id,
            source,
            Expiry(output),
            key_serde="string",
            value_serde="json",
            state_dir=str(tmp_path),
            commit_interval_ms=100,
        )
        thread = AppThread(app).start()
        app_threads.append(thread)
        return thread

    thread = start()
    _produce(bootstrap, source, first)
    wait_committed(bootstrap, app_id, source, thread=thread)
    # Stream time is base + 29 s at most on each partition: nothing is due yet.
    assert read_topic(bootstrap, output) == []
    thread.stop()

    # A restart must remember the timers and the stream time. Moving each partition's stream
    # time to base + 40 s fires the timers of k0..k10 (due base + 30..40 s) and nothing else.
    thread = start()
    _produce(bootstrap, source, [("late", base + 40_000)])
    for partition_key in ("a", "b", "c", "d"):
        _produce(bootstrap, source, [(partition_key, base + 40_000)])
    wait_committed(bootstrap, app_id, source, thread=thread)
    fired = _values(read_topic(bootstrap, output))
    due = {k for i, k in enumerate(keys) if base + i * 1_000 + 30_000 <= base + 40_000}
    by_key: dict[str, list[dict[str, object]]] = {}
    for value in fired:
        by_key.setdefault(str(value["key"]), []).append(value)
    # Only the keys whose partition saw stream time reach their timer fired (both partitions
    # got a record at base + 40 s, so all due keys did), each once, with its exact count.
    assert set(by_key) == due
    for key, values in by_key.items():
        assert len(values) == 1, f"timer of {key} fired {len(values)} times"
        assert values[0]["count"] == 3
        assert values[0]["timer"] == base + keys.index(key) * 1_000 + 30_000
        assert values[0]["stream_time"] >= values[0]["timer"]  # type: ignore[operator]
    # In timestamp order within each partition.
    per_partition: dict[int, list[int]] = {}
    for record in read_topic(bootstrap, output):
        per_partition.setdefault(record.partition, []).append(
            json.loads(record.value or b"{}")["timer"]
        )
    for timers in per_partition.values():
        assert timers == sorted(timers)
    thread.stop()

    # Another restart, far ahead: the remaining timers fire, the fired ones never again.
    thread = start()
    for partition_key in ("a", "b", "c", "d"):
        _produce(bootstrap, source, [(partition_key, base + 100_000)])
    wait_committed(bootstrap, app_id, source, thread=thread)
    values = _values(read_topic(bootstrap, output))
    counted = {str(v["key"]): 0 for v in values}
    for value in values:
        counted[str(value["key"])] += 1
    assert set(keys) <= set(counted)
    assert all(counted[k] == 1 for k in keys), counted


def test_wall_clock_timers_fire_without_input(
    bootstrap: str, new_topic: Callable[..., str], app_threads: list[AppThread], tmp_path: object
) -> None:
    source = new_topic("wall-in", partitions=2)
    output = new_topic("wall-out", partitions=2)
    app_id = unique_name("wall")
    app = application(
        bootstrap,
        app_id,
        source,
        WallTimer(output),
        key_serde="string",
        value_serde="json",
        state_dir=str(tmp_path),
    )
    thread = AppThread(app).start()
    app_threads.append(thread)
    keys = [f"w{i}" for i in range(10)]
    _produce(bootstrap, source, [(k, _now_ms()) for k in keys])
    wait_committed(bootstrap, app_id, source, thread=thread)
    # No more input: the timers are due 1 s after their records and fire all the same.
    records = _wait_for(
        lambda: read_topic(bootstrap, output), lambda r: len(r) >= len(keys), timeout=30
    )
    values = _values(records)
    assert sorted(str(v["key"]) for v in values) == sorted(keys)
    assert all(int(v["fired_late_ms"]) >= 0 for v in values)  # type: ignore[call-overload]
    thread.stop()
    assert len(read_topic(bootstrap, output)) == len(keys)  # fired once, even after the stop


def test_wall_clock_punctuation_runs_per_partition_with_no_records(
    bootstrap: str, new_topic: Callable[..., str], app_threads: list[AppThread], tmp_path: object
) -> None:
    source = new_topic("tick-in", partitions=2)
    output = new_topic("tick-out", partitions=1)
    app = application(
        bootstrap,
        unique_name("tick"),
        source,
        Ticker(output),
        value_serde="json",
        state_dir=str(tmp_path),
    )
    thread = AppThread(app).start()
    app_threads.append(thread)
    # Records keep coming: wait for enough of them (about 10 a second), then stop and read.
    deadline = time.monotonic() + 60
    while watermarks(bootstrap, output)[0][1] < 40 and time.monotonic() < deadline:
        time.sleep(0.25)
    thread.stop()
    values = _values(read_topic(bootstrap, output))
    assert {v["partition"] for v in values} == {0, 1}
    for partition in (0, 1):
        times = [int(v["at"]) for v in values if v["partition"] == partition]  # type: ignore[call-overload]
        assert times == sorted(times)
        # Due every 200 ms on a fixed schedule (a late call does not move the next one):
        # never more calls than intervals elapsed.
        assert len(times) <= (times[-1] - times[0]) // 200 + 2


def test_tumbling_window_final_counts_once_and_a_late_record_goes_to_the_dead_letter_topic(
    bootstrap: str, new_topic: Callable[..., str], app_threads: list[AppThread], tmp_path: object
) -> None:
    source = new_topic("win-in", partitions=1)
    output = new_topic("win-out", partitions=1)
    dead = new_topic("win-dlq", partitions=1)
    builder = eos.StreamBuilder()
    (
        builder.stream(source, key_serde="string", value_serde="json")
        .group_by_key()
        .windowed_by(eos.TumblingWindows(size_ms=1_000, grace_ms=1_000))
        .count(store="per-second")
        .final()
        .to_stream()
        .map(lambda wk, n: (wk.key, {"start": wk.start, "end": wk.end, "n": n}))
        .to(output, key_serde="string", value_serde="json")
    )
    app_id = unique_name("windows")
    app = eos.Application(
        application_id=app_id,
        bootstrap_servers=bootstrap,
        processor=builder.build(),
        processing_error_policy="dead_letter",
        dead_letter_topic=dead,
        late_record_policy="dead_letter",
        state_dir=str(tmp_path),
    )
    thread = AppThread(app).start()
    app_threads.append(thread)
    # (librdkafka reads a timestamp of 0 as "now": the times are offset by t0.)
    t0 = 1_700_000_000_000
    # Window [0, 1000) of "a" closes when stream time reaches 2000 (end + grace).
    _produce(bootstrap, source, [("a", t0), ("a", t0 + 500), ("a", t0 + 1_900), ("b", t0 + 1_999)])
    _produce(bootstrap, source, [("a", t0 + 2_500)])  # closes [0, 1000): a has 2 there
    _produce(bootstrap, source, [("a", t0 + 100)])  # late for [0, 1000): dead-lettered
    _produce(bootstrap, source, [("z", t0 + 10_000)])  # closes everything before 9000
    wait_committed(bootstrap, app_id, source, thread=thread)
    finals = [(r.key, json.loads(r.value or b"{}")) for r in read_topic(bootstrap, output)]
    assert finals == [
        (b"a", {"start": t0, "end": t0 + 1_000, "n": 2}),
        (b"a", {"start": t0 + 1_000, "end": t0 + 2_000, "n": 1}),
        (b"b", {"start": t0 + 1_000, "end": t0 + 2_000, "n": 1}),
        (b"a", {"start": t0 + 2_000, "end": t0 + 3_000, "n": 1}),
    ]
    late = read_topic(bootstrap, dead)
    assert [(r.key, json.loads(r.value or b"{}")) for r in late] == [(b"a", {"ts": t0 + 100})]
    headers = dict(late[0].headers)
    assert b"LateRecord" in (headers.get("eos.error.type") or b"")


class FailingOnce(Expiry):
    """Expiry whose on_timer sends, then raises while ``broken`` is set."""

    broken = True

    def on_timer(self, key: object, timestamp: int, ctx: eos.Context) -> None:
        super().on_timer(key, timestamp, ctx)
        if FailingOnce.broken:
            raise RuntimeError("bug in on_timer")


def test_an_on_timer_exception_stops_the_instance_and_the_timer_fires_once_after_the_fix(
    bootstrap: str, new_topic: Callable[..., str], app_threads: list[AppThread], tmp_path: object
) -> None:
    source = new_topic("fail-in", partitions=1)
    output = new_topic("fail-out", partitions=1)
    app_id = unique_name("timer-error")
    base = 1_700_000_000_000

    def app() -> eos.Application:
        return application(
            bootstrap,
            app_id,
            source,
            FailingOnce(output),
            key_serde="string",
            value_serde="json",
            state_dir=str(tmp_path),
        )

    FailingOnce.broken = True
    thread = AppThread(app()).start()
    app_threads.append(thread)
    _produce(bootstrap, source, [("k", base), ("other", base + 31_000)])
    error = thread.join(60)
    assert isinstance(error, eos.TimerError), error
    assert error.key == "k" and error.timestamp == base + 30_000
    assert read_topic(bootstrap, output) == []  # what the failed timer sent was aborted

    FailingOnce.broken = False
    thread = AppThread(app()).start()
    app_threads.append(thread)
    _wait_for(lambda: read_topic(bootstrap, output), lambda r: len(r) >= 1, timeout=60)
    thread.stop()
    values = _values(read_topic(bootstrap, output))
    assert [(v["key"], v["timer"], v["count"]) for v in values] == [("k", base + 30_000, 1)]
