"""Async processors: the runner's ordering, bounds, timeouts and cancellation (pure
logic, with a fake failure handler), the TestDriver, the DSL's async steps and the
checks made at construction. Exactly-once against a broker: tests/integration/test_async.py
and tests/chaos/test_async_chaos.py."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

import eos
from eos._async import AsyncRunner
from eos._stop import StopSignal
from eos.errors import ConfigError, ProcessingError, RecordTimeout, StateError, StuckCoroutineError
from eos.processor import Context
from eos.record import Record
from eos.stats import EngineStats
from eos.testing import TestDriver


class _Msg:
    def __init__(self, key: bytes | None, partition: int, offset: int) -> None:
        self._key = key
        self._partition = partition
        self._offset = offset

    def key(self) -> bytes | None:
        return self._key

    def topic(self) -> str:
        return "in"

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset


class _NoTransaction:
    def transaction_age(self) -> float:
        return 0.0


class _Failures:
    """Records what the runner hands to processing_error_policy."""

    def __init__(self) -> None:
        self.failed: list[tuple[int, BaseException, bool]] = []

    def process_failed(self, msg: Any, exc: BaseException, sent: bool, _rest: Any) -> None:
        self.failed.append((msg.offset(), exc, sent))


def _runner(processor: eos.AsyncProcessor, *, limit: int = 10, timeout_s: float = 5.0):
    sent: list[tuple[str, Any, Any]] = []
    ctx: Context[Any, Any] = Context(
        application_id="t",
        produce=lambda topic, value, key, **_: sent.append((topic, key, value)),
        key_serde=eos.BytesSerde(),
        value_serde=eos.BytesSerde(),
    )
    failures = _Failures()
    runner = AsyncRunner(
        processor,
        ctx=ctx,
        records=failures,  # type: ignore[arg-type]
        timing=None,  # type: ignore[arg-type]
        stats=EngineStats("t"),
        max_in_flight=limit,
        record_timeout_s=timeout_s,
        stop=StopSignal(5.0),
        guarantee=_NoTransaction(),  # type: ignore[arg-type]
        transaction_timeout_s=60.0,
    )
    return runner, sent, failures


def _submit(runner: AsyncRunner, key: bytes | None, offset: int, partition: int = 0) -> None:
    record = Record(key, b"v%d" % offset, "in", partition, offset, 0, None)
    runner.submit(record, _Msg(key, partition, offset), None)


class _Tracking(eos.AsyncProcessor):
    def __init__(self, delays: dict[int, float] | None = None) -> None:
        self.active = 0
        self.peak = 0
        self.delays = delays or {}

    async def process(self, record: Record, ctx: Context) -> None:
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            await asyncio.sleep(self.delays.get(record.offset, random.uniform(0, 0.003)))
            ctx.send("out", record.value, key=record.key)
        finally:
            self.active -= 1


def test_same_key_runs_in_offset_order_and_keys_overlap() -> None:
    processor = _Tracking()
    runner, sent, failures = _runner(processor, limit=8)
    for offset in range(200):
        _submit(runner, b"k%d" % (offset % 5), offset)
        while runner.room <= 0:
            runner.step(1.0)
    runner.drain()
    assert runner.size == 0 and not failures.failed
    for k in range(5):
        key = b"k%d" % k
        values = [v for _, kk, v in sent if kk == key]
        assert values == [b"v%d" % o for o in range(200) if o % 5 == k]
    assert 1 < processor.peak <= 5  # five keys: at most five at once
    runner.close()


def test_null_keys_chain_per_partition_and_the_limit_holds() -> None:
    processor = _Tracking()
    runner, sent, _ = _runner(processor, limit=4)
    for offset in range(60):
        _submit(runner, None if offset % 2 else b"k%d" % offset, offset, partition=offset % 3)
        while runner.room <= 0:
            runner.step(1.0)
    runner.drain()
    assert processor.peak <= 4
    assert runner.room == runner.limit + runner.read_ahead
    for partition in range(3):
        nulls = [v for _, k, v in sent if k is None and int(v[1:]) % 3 == partition]
        assert nulls == sorted(nulls, key=lambda v: int(v[1:]))
    runner.close()


def test_a_failed_record_goes_to_the_policy_before_its_key_goes_on() -> None:
    class FailSecond(eos.AsyncProcessor):
        async def process(self, record: Record, ctx: Context) -> None:
            await asyncio.sleep(0)
            if record.offset == 1:
                ctx.send("out", b"partial", key=record.key)
                raise ValueError("bad")
            ctx.send("out", record.value, key=record.key)

    runner, sent, failures = _runner(FailSecond())
    for offset in range(4):
        _submit(runner, b"k", offset)
    runner.drain()
    assert [(o, type(e), s) for o, e, s in failures.failed] == [(1, ValueError, True)]
    assert [v for _, _, v in sent] == [b"v0", b"partial", b"v2", b"v3"]
    runner.close()


def test_a_record_past_the_timeout_is_cancelled_and_fails_with_record_timeout() -> None:
    processor = _Tracking(delays={0: 3600.0})
    runner, sent, failures = _runner(processor, timeout_s=0.05)
    _submit(runner, b"a", 0)
    _submit(runner, b"a", 1)  # behind the hanging one: runs after the timeout
    _submit(runner, b"b", 2)
    runner.drain()
    assert [(o, type(e)) for o, e, _ in failures.failed] == [(0, RecordTimeout)]
    assert sorted(v for _, _, v in sent) == [b"v1", b"v2"]
    runner.close()


def test_reset_cancels_records_in_flight_and_closes_their_contexts() -> None:
    contexts: list[Context] = []

    class Hang(eos.AsyncProcessor):
        async def process(self, record: Record, ctx: Context) -> None:
            contexts.append(ctx)
            await asyncio.sleep(3600)

    runner, _, _ = _runner(Hang())
    for offset in range(3):
        _submit(runner, b"k%d" % offset, offset)
    runner.step(0.01)
    assert len(contexts) == 3 and runner.size == 3
    runner.reset()
    assert runner.size == 0 and runner.room == runner.limit + runner.read_ahead
    with pytest.raises(StateError, match="after the record's process"):
        contexts[0].send("out", b"late")
    runner.close()


def test_a_coroutine_that_swallows_cancellation_stops_the_run() -> None:
    class Stubborn(eos.AsyncProcessor):
        async def process(self, record: Record, ctx: Context) -> None:
            while True:
                try:
                    await asyncio.sleep(3600)
                except asyncio.CancelledError:
                    continue

    runner, _, _ = _runner(Stubborn())
    _submit(runner, b"k", 0)
    runner.step(0.01)
    import eos._async as module

    grace = module.CANCEL_GRACE_S
    module.CANCEL_GRACE_S = 0.05
    try:
        with pytest.raises(StuckCoroutineError, match="CancelledError"):
            runner.reset()
    finally:
        module.CANCEL_GRACE_S = grace
        for task in asyncio.all_tasks(runner.loop):
            task.get_coro().close()  # type: ignore[union-attr]


# -- the TestDriver and the DSL ---------------------------------------------------


class Enrich(eos.AsyncProcessor):
    stores = [eos.Store("count")]

    def __init__(self) -> None:
        self.events: list[str] = []

    async def setup(self) -> None:
        self.events.append("setup")

    async def on_assign(self, partitions: list[eos.TopicPartition], ctx: Context) -> None:
        self.events.append(f"assign {len(partitions)}")

    async def process(self, record: Record, ctx: Context) -> None:
        await asyncio.sleep(0)
        count = ctx.store("count")
        n = count.get(record.key, 0) + 1
        count[record.key] = n
        if record.value == {"bad": True}:
            raise ValueError("bad record")
        ctx.send("out", {**record.value, "n": n}, key=record.key)

    async def on_revoke(self, partitions: list[eos.TopicPartition]) -> None:
        self.events.append("revoke")

    async def teardown(self) -> None:
        self.events.append("teardown")


def test_the_driver_awaits_an_async_processor_and_its_hooks() -> None:
    processor = Enrich()
    driver = TestDriver(processor, key_serde="string", value_serde="json", partitions=2)
    driver.send({"x": 1}, key="a")
    driver.send({"x": 2}, key="a")
    assert driver.output_values("out") == [{"x": 1, "n": 1}, {"x": 2, "n": 2}]
    with pytest.raises(ProcessingError, match="bad record"):
        driver.send({"bad": True}, key="a")
    assert driver.store("count") == {"a": 2}  # the failed record's write was dropped
    driver.close()
    assert processor.events == ["setup", "assign 2", "revoke", "teardown"]


def test_dsl_async_steps_run_in_order_with_the_sync_ones() -> None:
    async def tier(value: Any) -> Any:
        await asyncio.sleep(0)
        return {**value, "tier": "gold" if value["amount"] > 100 else "basic"}

    async def paid(_key: Any, value: Any) -> bool:
        await asyncio.sleep(0)
        return bool(value["amount"])

    builder = eos.StreamBuilder()
    orders = builder.stream("orders", key_serde="string", value_serde="json")
    enriched = orders.filter_async(paid).map_values_async(tier)
    enriched.map_values(lambda v: v["tier"]).to("tiers", value_serde="string")
    enriched.to("enriched", value_serde="json")
    processor = builder.build()
    assert isinstance(processor, eos.AsyncProcessor)
    driver = TestDriver(processor, key_serde="string", value_serde="json")
    for amount in (0, 50, 500):
        driver.send({"amount": amount}, key="c", topic="orders")
    assert driver.output_values("tiers") == ["basic", "gold"]
    assert [v["amount"] for v in driver.output_values("enriched")]  # type: ignore[index] == [50, 500]


def test_dsl_async_steps_take_coroutine_functions_only() -> None:
    stream = eos.StreamBuilder().stream("in")
    with pytest.raises(ConfigError, match="async def"):
        stream.map_values_async(lambda v: v)  # type: ignore[arg-type, return-value]
    with pytest.raises(ConfigError, match=r"synchronous eos\.Processor"):
        stream.process(Enrich())


def test_construction_checks() -> None:
    class SyncProcess(eos.AsyncProcessor):
        def process(self, record: Record, ctx: Context) -> None:  # type: ignore[override]
            pass

    with pytest.raises(ConfigError, match="must be an async def"):
        TestDriver(SyncProcess())

    class AsyncOnPlain(eos.Processor):
        async def process(self, record: Record, ctx: Context) -> None:  # type: ignore[override]
            pass

    with pytest.raises(ConfigError, match="AsyncProcessor"):
        TestDriver(AsyncOnPlain())
    with pytest.raises(ConfigError, match="record_timeout_ms"):
        eos.Application(
            application_id="a",
            bootstrap_servers="localhost:9092",
            input_topics=["in"],
            processor=Enrich(),
            transaction_timeout_ms=10_000,
        )
    with pytest.raises(ConfigError, match="max_in_flight"):
        eos.Application(
            application_id="a",
            bootstrap_servers="localhost:9092",
            input_topics=["in"],
            processor=Enrich(),
            max_in_flight=0,
        )
    # A synchronous processor keeps any transaction timeout.
    eos.Config(
        application_id="a",
        bootstrap_servers="localhost:9092",
        input_topics=["in"],
        transaction_timeout_ms=10_000,
    )


def test_properties_keys(tmp_path: Any) -> None:
    path = tmp_path / "app.properties"
    path.write_text(
        "application.id=a\nbootstrap.servers=localhost:9092\ninput.topics=in\n"
        "max.in.flight.records=250\nrecord.timeout.ms=5000\n"
    )
    config = eos.Config.from_properties(path)
    assert (config.max_in_flight, config.record_timeout_ms) == (250, 5000)


def test_dsl_setup_and_teardown_hooks_are_awaited_on_the_loop() -> None:
    events: list[str] = []
    builder = eos.StreamBuilder()

    @builder.on_setup
    async def open_client() -> None:
        events.append(f"open {asyncio.get_running_loop() is not None}")

    async def close_client() -> None:
        events.append("close")

    builder.on_teardown(close_client)

    async def double(value: Any) -> Any:
        return value * 2

    builder.stream("in", key_serde="string", value_serde="json").map_values_async(double).to("out")
    driver = TestDriver(builder.build(), key_serde="string", value_serde="json")
    driver.send(21, key="k")
    assert driver.output_values("out") == [42]
    driver.close()
    assert events == ["open True", "close"]


def test_dsl_hooks_need_an_async_topology_and_async_functions() -> None:
    builder = eos.StreamBuilder()
    with pytest.raises(ConfigError, match="async def"):
        builder.on_setup(lambda: None)  # type: ignore[arg-type, return-value]

    async def nothing() -> None:
        pass

    builder.on_setup(nothing)
    builder.stream("in").to("out")
    with pytest.raises(ConfigError, match="async steps"):
        builder.build()
