"""Timers, punctuation and stream time, through the TestDriver (the engine's own TimeKeeper).

Exactly-once across crashes is proven against a real broker (tests/integration/
test_time.py, tests/chaos/test_time_chaos.py); these tests pin the semantics:
when a timer is due, in which order timers fire, what cancel and duplicates
do, what an abort keeps, and the errors for misuse.
"""

from __future__ import annotations

import pytest

import eos
from eos._time_store import decode_key, encode_key, ts
from eos.errors import ConfigError, StateError, TimerError
from eos.testing import TestDriver


class Reminder(eos.Processor):
    """Schedules ``value["at"]`` for the key (``value["cancel"]`` cancels instead)."""

    stores = [eos.Store("notes", key_serde="string", value_serde="json")]

    def __init__(self) -> None:
        self.fired: list[tuple[object, int, int | None]] = []

    def process(self, record: eos.Record, ctx: eos.Context) -> None:
        value = record.value
        assert isinstance(value, dict)
        kind = value.get("kind", "stream_time")
        if value.get("cancel"):
            ctx.timers.cancel(record.key, value.get("at"), kind=kind)
            return
        ctx.timers.schedule(record.key, value["at"], kind=kind)
        ctx.store("notes")[str(record.key)] = value.get("note", "")

    def on_timer(self, key: object, timestamp: int, ctx: eos.Context) -> None:
        self.fired.append((key, timestamp, ctx.stream_time))
        note = ctx.store("notes").get(str(key), "")
        ctx.send("reminders", {"key": key, "at": timestamp, "note": note}, key=key)
        if isinstance(key, str) and key.startswith("chain") and timestamp < 5_000:
            # Due at once (stream time is past it): fires in this pass, in order.
            ctx.timers.schedule(key, timestamp + 1_000)


def driver(processor: eos.Processor | None = None, **kw: object) -> TestDriver:
    return TestDriver(
        processor or Reminder(),
        key_serde="string",
        value_serde="json",
        **kw,  # type: ignore[arg-type]
    )


def fired_at(d: TestDriver) -> list[tuple[object, int]]:
    return [(v["key"], v["at"]) for v in d.output_values("reminders")]  # type: ignore[index]


def test_stream_time_timers_fire_once_when_stream_time_reaches_them_in_order() -> None:
    d = driver()
    d.send({"at": 3_000}, key="c", timestamp=100)
    d.send({"at": 1_000}, key="a", timestamp=200)
    d.send({"at": 2_000}, key="b", timestamp=300)
    assert fired_at(d) == []
    d.send({"at": 10_000}, key="x", timestamp=2_000)  # stream time 2000: a and b are due
    assert fired_at(d) == [("a", 1_000), ("b", 2_000)]
    d.send({"at": 10_000}, key="y", timestamp=1_500)  # behind stream time: nothing moves
    assert fired_at(d) == [("a", 1_000), ("b", 2_000)]
    d.send({"at": 10_000}, key="z", timestamp=3_000)
    assert fired_at(d) == [("a", 1_000), ("b", 2_000), ("c", 3_000)]
    assert d.pending_timers() == [(10_000, "x", "stream_time"), (10_000, "y", "stream_time"),
                                  (10_000, "z", "stream_time")]  # fmt: skip
    assert d.stream_time() == 3_000


def test_on_timer_sees_its_partition_store_and_stream_time() -> None:
    d = driver()
    d.send({"at": 1_000, "note": "call back"}, key="a", timestamp=0)
    d.send({"at": 9_999}, key="b", timestamp=1_500)
    assert d.output_values("reminders") == [{"key": "a", "at": 1_000, "note": "call back"}]
    processor = d.processor
    assert isinstance(processor, Reminder)
    assert processor.fired == [("a", 1_000, 1_500)]


def test_scheduling_the_same_timer_twice_is_one_timer() -> None:
    d = driver()
    d.send({"at": 1_000}, key="a", timestamp=0)
    d.send({"at": 1_000}, key="a", timestamp=10)
    assert d.pending_timers() == [(1_000, "a", "stream_time")]
    d.send({"at": 5_000}, key="b", timestamp=2_000)
    assert fired_at(d) == [("a", 1_000)]


def test_cancel_one_timer_or_all_timers_of_a_key() -> None:
    d = driver()
    for at in (1_000, 2_000, 3_000):
        d.send({"at": at}, key="a", timestamp=0)
    d.send({"at": 2_000}, key="b", timestamp=0)
    d.send({"cancel": True, "at": 2_000}, key="a", timestamp=0)
    assert [t[:2] for t in d.pending_timers()] == [(1_000, "a"), (2_000, "b"), (3_000, "a")]
    d.send({"cancel": True}, key="a", timestamp=0)
    assert [t[:2] for t in d.pending_timers()] == [(2_000, "b")]
    d.send({"cancel": True}, key="nobody", timestamp=0)  # nothing to cancel: no error
    d.send({"at": 9_000}, key="c", timestamp=5_000)
    assert fired_at(d) == [("b", 2_000)]


def test_a_timer_scheduled_in_on_timer_that_is_already_due_fires_in_the_same_pass() -> None:
    d = driver()
    d.send({"at": 1_000}, key="chain", timestamp=0)
    d.send({"at": 99_000}, key="other", timestamp=2_500)  # chain fires at 1000 and 2000
    assert fired_at(d) == [("chain", 1_000), ("chain", 2_000)]
    assert (3_000, "chain", "stream_time") in d.pending_timers()


def test_wall_clock_timers_fire_when_the_wall_clock_passes_them_without_records() -> None:
    d = driver()
    now = d.wall_clock
    d.send({"at": now + 5_000, "kind": "wall_clock"}, key="w", timestamp=0)
    d.send({"at": now + 1_000, "kind": "wall_clock"}, key="v", timestamp=0)
    d.advance_wall_clock(999)
    assert fired_at(d) == []
    d.advance_wall_clock(1)
    assert fired_at(d) == [("v", now + 1_000)]
    d.advance_wall_clock(60_000)
    assert fired_at(d) == [("v", now + 1_000), ("w", now + 5_000)]
    assert d.pending_timers() == []


def test_keys_of_any_json_type_bytes_and_none_come_back() -> None:
    for key in ("text", 7, 1.5, True, ["a", 1], {"k": [1, 2]}, None, b"\x00raw"):
        assert decode_key(encode_key(key)) == key
    assert decode_key(encode_key(("a", 1))) == ["a", 1]  # a JSON array comes back as a list
    with pytest.raises(ConfigError, match="cannot be stored"):
        encode_key(object())


def test_timestamps_sort_numerically_negatives_included() -> None:
    values = [-(10**12), -1, 0, 1, 255, 256, 10**12]
    assert sorted(values, key=ts) == values
    assert [ts(v) for v in values] == sorted(ts(v) for v in values)


def test_an_exception_in_on_timer_is_a_timer_error_and_keeps_the_timer() -> None:
    class Failing(Reminder):
        def on_timer(self, key: object, timestamp: int, ctx: eos.Context) -> None:
            ctx.send("reminders", {"key": key, "at": timestamp}, key=key)
            raise RuntimeError("boom")

    d = driver(Failing())
    d.send({"at": 1_000}, key="a", timestamp=0)
    with pytest.raises(TimerError, match=r"on_timer\(key='a', timestamp=1000\).*boom") as info:
        d.send({"at": 9_000}, key="b", timestamp=2_000)
    assert info.value.key == "a" and info.value.timestamp == 1_000
    assert isinstance(info.value.cause, RuntimeError)
    # Nothing of the failed transaction is kept: no output, the timer still pending.
    assert d.output_values("reminders") == []
    assert (1_000, "a", "stream_time") in d.pending_timers()


def test_a_failed_record_keeps_no_timer_it_scheduled() -> None:
    class ScheduleThenFail(Reminder):
        def process(self, record: eos.Record, ctx: eos.Context) -> None:
            ctx.timers.schedule(record.key, 1_000)
            raise ValueError("bad record")

    d = driver(ScheduleThenFail(), processing_error_policy="skip")
    d.send({}, key="a", timestamp=0)
    assert d.skipped == 1
    assert d.pending_timers() == []


def test_timers_without_on_timer_are_refused() -> None:
    class NoOnTimer(eos.Processor):
        def process(self, record: eos.Record, ctx: eos.Context) -> None:
            ctx.timers.schedule(record.key, 1)

    d = TestDriver(NoOnTimer(), key_serde="string")
    with pytest.raises(ConfigError, match="does not define on_timer"):
        d.send(b"x", key="a")


def test_timers_and_schedule_outside_their_hooks_are_refused() -> None:
    class InAssign(Reminder):
        def on_assign(self, partitions: list[eos.TopicPartition], ctx: eos.Context) -> None:
            ctx.timers.schedule("k", 1)

    with pytest.raises(StateError, match="only available in process"):
        driver(InAssign())

    class ScheduleInProcess(eos.Processor):
        def process(self, record: eos.Record, ctx: eos.Context) -> None:
            ctx.schedule(100, lambda ts, c: None)

    with pytest.raises(StateError, match="only available in on_assign"):
        TestDriver(ScheduleInProcess()).send(b"x")


class Ticks(eos.Processor):
    def __init__(self, kind: str = "wall_clock", interval: int = 1_000) -> None:
        self.kind = kind
        self.interval = interval

    def on_assign(self, partitions: list[eos.TopicPartition], ctx: eos.Context) -> None:
        self.handle = ctx.schedule(self.interval, self.tick, kind=self.kind)  # type: ignore[arg-type]

    def tick(self, timestamp: int, ctx: eos.Context) -> None:
        ctx.send("ticks", {"p": ctx.partition, "at": timestamp})

    def process(self, record: eos.Record, ctx: eos.Context) -> None:
        pass


def test_wall_clock_punctuation_runs_per_partition_and_skips_missed_intervals() -> None:
    d = TestDriver(Ticks(), partitions=2, value_serde="json")
    start = d.wall_clock
    d.advance_wall_clock(999)
    assert d.output_values("ticks") == []
    d.advance_wall_clock(1)
    assert d.output_values("ticks") == [
        {"p": 0, "at": start + 1_000},
        {"p": 1, "at": start + 1_000},
    ]
    d.advance_wall_clock(10_500)  # ten intervals missed: one call each, then on schedule
    assert len(d.output_values("ticks")) == 4
    d.advance_wall_clock(500)
    assert len(d.output_values("ticks")) == 6


def test_stream_time_punctuation_starts_with_the_first_record() -> None:
    processor = Ticks(kind="stream_time", interval=10_000)
    d = TestDriver(processor, value_serde="json")
    d.send(1, timestamp=5)
    d.send(1, timestamp=9_000)
    d.send(1, timestamp=10_005)
    d.send(1, timestamp=40_000)
    assert [v["at"] for v in d.output_values("ticks")] == [5, 10_005, 40_000]  # type: ignore[index]
    processor.handle.cancel()
    d.send(1, timestamp=90_000)
    assert len(d.output_values("ticks")) == 3


def test_a_store_name_reserved_for_eos_is_refused() -> None:
    class Reserved(eos.Processor):
        stores = [eos.Store("__eos-time")]

        def process(self, record: eos.Record, ctx: eos.Context) -> None:
            pass

    with pytest.raises(ConfigError, match="eos's own"):
        TestDriver(Reserved())


def test_a_dsl_topology_hands_timers_to_its_processor() -> None:
    class Later(eos.Processor):
        def process(self, record: eos.Record, ctx: eos.Context) -> None:
            ctx.timers.schedule(record.key, record.timestamp + 10)

        def on_timer(self, key: object, timestamp: int, ctx: eos.Context) -> None:
            ctx.send("fired", timestamp, key=key)

    builder = eos.StreamBuilder()
    builder.stream("in").filter(lambda k, v: True).process(Later())
    d = TestDriver(builder.build(), key_serde="string", value_serde="json")
    d.send(1, key="a", timestamp=0)
    d.send(1, key="b", timestamp=20)
    assert d.output_pairs("fired") == [("a", 10)]

    two = eos.StreamBuilder()
    stream = two.stream("in")
    stream.process(Later())
    stream.process(Later())
    with pytest.raises(ConfigError, match="more than one processor"):
        two.build()


def test_cancel_without_a_kind_removes_both_kinds() -> None:
    class Both(eos.Processor):
        def process(self, record: eos.Record, ctx: eos.Context) -> None:
            if record.value == b"cancel":
                ctx.timers.cancel(record.key)
                return
            ctx.timers.schedule(record.key, 1_000)
            ctx.timers.schedule(record.key, ctx.wall_clock + 1_000, kind="wall_clock")

        def on_timer(self, key: object, timestamp: int, ctx: eos.Context) -> None:
            ctx.send("fired", b"x", key=key)

    d = TestDriver(Both(), key_serde="string")
    d.send(b"go", key="a", timestamp=0)
    assert {t[2] for t in d.pending_timers()} == {"stream_time", "wall_clock"}
    d.send(b"cancel", key="a", timestamp=0)
    assert d.pending_timers() == []


def test_ctx_wall_clock_is_the_drivers_clock() -> None:
    seen: list[int] = []

    class Clock(eos.Processor):
        def process(self, record: eos.Record, ctx: eos.Context) -> None:
            seen.append(ctx.wall_clock)

    d = TestDriver(Clock())
    d.send(b"x")
    d.advance_wall_clock(1_234)
    d.send(b"y")
    assert seen == [d.wall_clock - 1_234, d.wall_clock]
