"""An AsyncProcessor against the real broker: concurrent, exactly-once, in order per key.

Each test reads the output back with a read_committed consumer.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import defaultdict
from typing import Any

import pytest
from apprunner import AppThread, wait_committed
from confluent_kafka import Producer

import eos
from eos.testing.helpers import create_topic, produce, read_topic, unique_name

pytestmark = pytest.mark.integration


class Enrich(eos.AsyncProcessor):
    """Awaits a random 1-20 ms "call" per record; counts per key; sends value + count.

    Records which of them overlapped: ``peak`` is the most records in ``process`` at once.
    """

    stores = [eos.Store("seen", key_serde="string", value_serde="json")]

    def __init__(self, output: str, *, fail_on: str | None = None, hang_on: str | None = None):
        self.output = output
        self.fail_on = fail_on
        self.hang_on = hang_on
        self.active = 0
        self.peak = 0
        self.set_up = False
        self.torn_down = False

    async def setup(self) -> None:
        self.set_up = True

    async def process(self, record: eos.Record, ctx: eos.Context) -> None:
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            value = record.value.decode()
            if value == self.hang_on:
                await asyncio.sleep(3600)
            await asyncio.sleep(random.uniform(0.001, 0.02))
            if value == self.fail_on:
                raise ValueError(f"bad record {value}")
            seen = ctx.store("seen")
            n = seen.get(record.key.decode(), 0) + 1
            seen[record.key.decode()] = n
            assert ctx.record is record  # the record's own context across awaits
            ctx.send(self.output, f"{value}|{n}".encode(), key=record.key)
        finally:
            self.active -= 1

    async def teardown(self) -> None:
        self.torn_down = True


def _run_to_end(app_threads: list, bootstrap: str, source: str, **settings: object) -> Any:
    """Run an Application of ``settings`` on ``source`` until it committed the whole topic;
    stop it; return it."""
    app = eos.Application(bootstrap_servers=bootstrap, input_topics=[source], **settings)  # type: ignore[arg-type]
    runner = AppThread(app).start()
    app_threads.append(runner)
    wait_committed(bootstrap, str(settings["application_id"]), source, thread=runner)
    runner.stop()
    return app


def _per_key(records: list) -> dict[bytes, list[str]]:
    keyed: dict[bytes, list[str]] = defaultdict(list)
    for r in records:
        keyed[r.key].append(r.value.decode())
    return keyed


def test_async_processor_is_concurrent_exactly_once_and_ordered_per_key(
    bootstrap, app_threads
) -> None:
    """2,000 records over 40 keys and 2 partitions: each output once, per key in input
    order with its running count, many records in flight at once, setup and teardown run."""
    source = create_topic(bootstrap, unique_name("async-in"), 2)
    sink = create_topic(bootstrap, unique_name("async-out"), 2)
    app_id = unique_name("async")
    records = [(f"k{i % 40}", f"k{i % 40}-{i:05d}") for i in range(2000)]
    produce(bootstrap, source, records)
    processor = Enrich(sink)
    app = _run_to_end(
        app_threads,
        bootstrap,
        source,
        application_id=app_id,
        processor=processor,
        max_in_flight=50,
    )

    out = read_topic(bootstrap, sink)
    assert len(out) == 2000
    got = _per_key(out)
    expected: dict[bytes, list[str]] = defaultdict(list)
    for key, value in records:
        expected[key.encode()].append(f"{value}|{len(expected[key.encode()]) + 1}")
    assert got == expected
    assert processor.peak > 10, processor.peak  # concurrent, bounded by max_in_flight
    assert processor.peak <= 50
    assert processor.set_up and processor.torn_down
    assert app.state.processed_count == 2000
    assert app.state.state == "stopped"


def test_async_failure_and_timeout_go_through_the_policy(bootstrap, app_threads) -> None:
    """A record that raises and one that hangs past record_timeout_ms are dead-lettered;
    every other record comes out once, in order per key."""
    source = create_topic(bootstrap, unique_name("async-in"), 1)
    sink = create_topic(bootstrap, unique_name("async-out"), 1)
    dlq = create_topic(bootstrap, unique_name("async-dlq"), 1)
    app_id = unique_name("async-fail")
    records = [(f"k{i % 5}", f"v{i:04d}") for i in range(300)]
    produce(bootstrap, source, records)
    _run_to_end(
        app_threads,
        bootstrap,
        source,
        application_id=app_id,
        processor=Enrich(sink, fail_on="v0100", hang_on="v0200"),
        max_in_flight=20,
        record_timeout_ms=1000,
        processing_error_policy="dead_letter",
        dead_letter_topic=dlq,
    )

    out = read_topic(bootstrap, sink)
    values = sorted(r.value.decode().split("|")[0] for r in out)
    assert values == sorted(v for _, v in records if v not in ("v0100", "v0200"))
    dead = read_topic(bootstrap, dlq)
    assert sorted(r.value for r in dead) == [b"v0100", b"v0200"]
    errors = {dict(r.headers or [])["eos.error.type"] for r in dead}
    assert errors == {b"ValueError", b"RecordTimeout"}, errors
    for key, values_of_key in _per_key(out).items():
        offsets = [int(v.split("|")[0][1:]) for v in values_of_key]
        assert offsets == sorted(offsets), key


class SendThenFail(eos.AsyncProcessor):
    """Sends the record, awaits, then raises for ``bad``: a partial output that must vanish."""

    def __init__(self, output: str, bad: bytes) -> None:
        self.output = output
        self.bad = bad

    async def process(self, record: eos.Record, ctx: eos.Context) -> None:
        ctx.send(self.output, record.value, key=record.key)
        await asyncio.sleep(random.uniform(0.001, 0.01))
        if record.value == self.bad:
            raise ValueError("failed after sending")


def test_async_failure_after_sending_aborts_and_replays(bootstrap, app_threads) -> None:
    """A record that fails after it sent something: the batch (with the records in
    flight) is aborted and replayed; the record is dead-lettered and its partial output
    never becomes visible; every other record comes out exactly once."""
    source = create_topic(bootstrap, unique_name("async-in"), 2)
    sink = create_topic(bootstrap, unique_name("async-out"), 2)
    dlq = create_topic(bootstrap, unique_name("async-dlq"), 1)
    app_id = unique_name("async-partial")
    records = [(f"k{i % 17}", f"v{i:04d}") for i in range(500)]
    produce(bootstrap, source, records)
    app = _run_to_end(
        app_threads,
        bootstrap,
        source,
        application_id=app_id,
        processor=SendThenFail(sink, b"v0250"),
        max_in_flight=30,
        processing_error_policy="dead_letter",
        dead_letter_topic=dlq,
    )

    out = sorted(r.value.decode() for r in read_topic(bootstrap, sink))
    assert out == sorted(v for _, v in records if v != "v0250")
    assert [r.value for r in read_topic(bootstrap, dlq)] == [b"v0250"]
    assert app.state.abort_count >= 1


class HangOn(eos.AsyncProcessor):
    """Sends every record; ``hang`` awaits forever (until cancelled) before sending."""

    def __init__(self, output: str, hang: bytes | None) -> None:
        self.output = output
        self.hang = hang
        self.hanging = asyncio.Event()

    async def process(self, record: eos.Record, ctx: eos.Context) -> None:
        if record.value == self.hang:
            self.hanging.set()
            await asyncio.sleep(3600)
        ctx.send(self.output, record.value, key=record.key)


def test_a_stop_that_cannot_wait_for_the_records_in_flight_aborts_them(
    bootstrap, app_threads
) -> None:
    """A stop whose grace period runs out while a record hangs: the batch is aborted
    (nothing of it visible), the run ends; the next run processes every record once."""
    source = create_topic(bootstrap, unique_name("async-in"), 1)
    sink = create_topic(bootstrap, unique_name("async-out"), 1)
    app_id = unique_name("async-stop")
    records = [(f"k{i % 7}", f"v{i:03d}") for i in range(100)]
    produce(bootstrap, source, records)
    first = HangOn(sink, b"v050")
    app = eos.Application(
        application_id=app_id,
        bootstrap_servers=bootstrap,
        input_topics=[source],
        processor=first,
        record_timeout_ms=20_000,
        shutdown_timeout_s=1.0,
    )
    runner = AppThread(app).start()
    app_threads.append(runner)
    deadline = time.monotonic() + 60
    while not first.hanging.is_set():  # set on the app's loop; read here
        assert time.monotonic() < deadline, "the hanging record never started"
        assert runner.thread.is_alive(), runner.error
        time.sleep(0.05)
    runner.stop()
    assert app.state.abort_count >= 1

    app2 = eos.Application(
        application_id=app_id,
        bootstrap_servers=bootstrap,
        input_topics=[source],
        processor=HangOn(sink, None),
    )
    runner2 = AppThread(app2).start()
    app_threads.append(runner2)
    wait_committed(bootstrap, app_id, source, thread=runner2)
    runner2.stop()
    out = sorted(r.value.decode() for r in read_topic(bootstrap, sink))
    assert out == sorted(v for _, v in records)


def test_a_rebalance_with_records_in_flight_is_exactly_once(bootstrap, app_threads) -> None:
    """A second instance joins while the first has records in flight: the revocation
    waits for them and commits, the partitions move, and every record comes out once,
    in order per key."""
    source = create_topic(bootstrap, unique_name("async-in"), 4)
    sink = create_topic(bootstrap, unique_name("async-out"), 4)
    app_id = unique_name("async-rebalance")
    records = [(f"k{i % 23}", f"k{i % 23}-{i:05d}") for i in range(3000)]
    produce(bootstrap, source, records)

    def instance(n: int) -> tuple[eos.Application, Enrich]:
        processor = Enrich(sink)
        app = eos.Application(
            application_id=app_id,
            bootstrap_servers=bootstrap,
            input_topics=[source],
            processor=processor,
            instance_id=n,
            max_in_flight=40,
        )
        return app, processor

    first, _ = instance(0)
    runner = AppThread(first).start()
    app_threads.append(runner)
    deadline = time.monotonic() + 60
    while first.state.processed_count < 300:  # records are flowing
        assert time.monotonic() < deadline and runner.thread.is_alive(), runner.error
        time.sleep(0.05)
    second, _ = instance(1)
    runner2 = AppThread(second).start()
    app_threads.append(runner2)
    wait_committed(bootstrap, app_id, source, thread=runner2, timeout=120)
    runner.stop()
    runner2.stop()

    assert second.state.processed_count > 0  # the partitions did move
    got = _per_key(read_topic(bootstrap, sink))
    values = {key: [v.split("|")[0] for v in vs] for key, vs in got.items()}
    expected: dict[bytes, list[str]] = defaultdict(list)
    for key, value in records:
        expected[key.encode()].append(value)
    assert values == expected  # each once, per key in input order


class Remind(eos.AsyncProcessor):
    """Schedules a stream-time timer 1 s after each record; the async on_timer sends it."""

    def __init__(self, output: str) -> None:
        self.output = output

    async def process(self, record: eos.Record, ctx: eos.Context) -> None:
        await asyncio.sleep(random.uniform(0.001, 0.005))
        ctx.timers.schedule(record.key, record.timestamp + 1000)
        ctx.send(self.output, b"seen:" + record.value, key=record.key)

    async def on_timer(self, key: object, timestamp: int, ctx: eos.Context) -> None:
        await asyncio.sleep(0.001)
        ctx.send(self.output, b"timer:%d" % timestamp, key=key)  # type: ignore[arg-type]


def test_async_timers_fire_once_after_the_records_before_them(bootstrap, app_threads) -> None:
    """Stream-time timers of an async processor fire exactly once, each after every
    record that made it due (the engine lets the records in flight finish first)."""
    source = create_topic(bootstrap, unique_name("async-in"), 1)
    sink = create_topic(bootstrap, unique_name("async-out"), 1)
    app_id = unique_name("async-timers")
    base = 1_700_000_000_000
    # Key k<i % 5>, one record per 500 ms of event time: each record's timer (+1 s) is
    # due two records later.
    records = [(f"k{i % 5}", f"v{i:03d}", base + 500 * i) for i in range(200)]
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for key, value, timestamp in records:
        producer.produce(source, value, key, timestamp=timestamp)
    assert producer.flush(30) == 0
    _run_to_end(
        app_threads,
        bootstrap,
        source,
        application_id=app_id,
        processor=Remind(sink),
        max_in_flight=20,
    )

    out = [r.value.decode() for r in read_topic(bootstrap, sink)]
    timers = [int(v.split(":")[1]) for v in out if v.startswith("timer:")]
    assert len(timers) == len(set(timers))  # each once
    # Due when stream time reaches it: every record up to stream time t + 1000 came first.
    assert sorted(timers) == [t + 1000 for *_, t in records if t + 1000 <= records[-1][2]]
    position = {v: i for i, v in enumerate(out)}
    for *_, t in records:
        due = t + 1000
        if due <= records[-1][2]:
            before = [v for _, v, ts in records if ts <= due]
            assert all(position[f"seen:{v}"] < position[f"timer:{due}"] for v in before)
