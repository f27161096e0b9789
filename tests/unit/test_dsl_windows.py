"""Windowed aggregations in the DSL, through the TestDriver: every window type,
updates and final results, grace and late records, session merges, expiry."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

import pytest

import eos
from eos.errors import ConfigError
from eos.state.transaction import StoreTransaction
from eos.testing import TestDriver

Seen = list[tuple[eos.Windowed[Any], Any]]
Event = tuple[str, int]  # (key, timestamp); the value sent is the timestamp


class Run:
    """A windowed aggregation over topic "in", its update and final streams collected."""

    def __init__(
        self,
        windows: eos.windows.Windows,
        *,
        op: str = "count",
        retention_ms: int = 0,
        partitions: int = 1,
        **driver_args: Any,
    ) -> None:
        builder = eos.StreamBuilder()
        grouped = builder.stream("in").group_by_key().windowed_by(windows)
        table: eos.WindowedTable[Any, Any]
        if op == "count":
            table = grouped.count(store="w", backend="memory", retention_ms=retention_ms)
        elif op == "collect":  # the list of values, in arrival order (sessions: sorted)
            merger = _merge if isinstance(windows, eos.SessionWindows) else None
            table = grouped.aggregate(
                list,
                lambda _k, v, agg: [*agg, v],
                store="w",
                merger=merger,
                backend="memory",
                retention_ms=retention_ms,
            )
        else:
            table = grouped.reduce(
                lambda a, b: a + b, store="w", backend="memory", retention_ms=retention_ms
            )
        self.updates: Seen = []
        self.finals: Seen = []
        table.to_stream().peek(lambda k, v: self.updates.append((k, v)))
        table.final().to_stream().peek(lambda k, v: self.finals.append((k, v)))
        self.driver = TestDriver(
            builder.build(),
            key_serde="string",
            value_serde="json",
            partitions=partitions,
            **driver_args,
        )

    def send(self, events: Iterable[Event], partition: int | None = None) -> Run:
        for key, timestamp in events:
            if partition is None:
                self.driver.send(timestamp, key=key, timestamp=timestamp)
            else:
                self.driver.send(timestamp, key=key, timestamp=timestamp, partition=partition)
        return self

    def latest(self) -> dict[eos.Windowed[Any], Any]:
        """The update stream folded into a table (None deletes)."""
        table: dict[eos.Windowed[Any], Any] = {}
        for key, value in self.updates:
            if value is None:
                del table[key]
            else:
                table[key] = value
        return table


def _merge(_key: object, a: list[int], b: list[int]) -> list[int]:
    return sorted(a + b)


def W(key: str, start: int, end: int) -> eos.Windowed[str]:
    return eos.Windowed(key, start, end)


# -- window definitions ------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "key"),
    [
        (lambda: eos.TumblingWindows(0), "size_ms"),
        (lambda: eos.TumblingWindows(10, grace_ms=-1), "grace_ms"),
        (lambda: eos.TumblingWindows(True), "size_ms"),
        (lambda: eos.HoppingWindows(10, 0), "advance_ms"),
        (lambda: eos.HoppingWindows(10, 11), "advance_ms"),
        (lambda: eos.HoppingWindows(10, 5, grace_ms=1.5), "grace_ms"),
        (lambda: eos.SlidingWindows(-1), "max_difference_ms"),
        (lambda: eos.SlidingWindows("5"), "max_difference_ms"),
        (lambda: eos.SessionWindows(0), "inactivity_gap_ms"),
        (lambda: eos.SessionWindows(5, grace_ms=None), "grace_ms"),
    ],
)
def test_invalid_window_arguments_are_config_errors(make: Callable[[], Any], key: str) -> None:
    """Each window definition rejects a bad argument with a ConfigError naming it."""
    with pytest.raises(ConfigError) as info:
        make()
    assert info.value.key == key
    assert key in str(info.value)


def test_windowed_is_a_named_tuple_written_as_a_json_list() -> None:
    """Windowed(key, start, end) is a NamedTuple; to() with the JSON serde writes
    it as [key, start, end]."""
    builder = eos.StreamBuilder()
    (
        builder.stream("in")
        .group_by_key()
        .windowed_by(eos.TumblingWindows(10))
        .count(store="w", backend="memory")
        .to_stream()
        .to("out")
    )
    driver = TestDriver(builder.build(), key_serde="json", value_serde="json")
    driver.send("x", key="a", timestamp=13)
    assert driver.output_pairs("out") == [(["a", 10, 20], 1)]
    assert W("a", 10, 20) == ("a", 10, 20) and W("a", 10, 20).end == 20


def test_dsl_misuse_is_a_config_error() -> None:
    """windowed_by needs a window definition; sessions need a merger; others refuse one;
    retention_ms must be an int >= 0."""
    grouped = eos.StreamBuilder().stream("in").group_by_key()
    with pytest.raises(ConfigError):
        grouped.windowed_by(10)  # type: ignore[arg-type]
    sessions = grouped.windowed_by(eos.SessionWindows(5))
    with pytest.raises(ConfigError) as info:
        sessions.aggregate(list, lambda k, v, a: a, store="s")
    assert info.value.key == "merger"
    tumbling = grouped.windowed_by(eos.TumblingWindows(5))
    with pytest.raises(ConfigError) as info:
        tumbling.aggregate(list, lambda k, v, a: a, store="t", merger=lambda k, a, b: a)
    assert info.value.key == "merger"
    with pytest.raises(ConfigError) as info:
        tumbling.count(store="t", retention_ms=-1)
    assert info.value.key == "retention_ms"


# -- tumbling -----------------------------------------------------------------------


def test_tumbling_count_updates_and_final() -> None:
    """to_stream emits every update; final emits each window once, when stream
    time reaches its end (grace 0), in close order."""
    run = Run(eos.TumblingWindows(10)).send([("a", 1), ("b", 5), ("a", 9), ("a", 10)])
    assert run.updates == [
        (W("a", 0, 10), 1),
        (W("b", 0, 10), 1),
        (W("a", 0, 10), 2),
        (W("a", 10, 20), 1),
    ]
    assert run.finals == [(W("a", 0, 10), 2), (W("b", 0, 10), 1)]
    run.send([("b", 19)])
    assert len(run.finals) == 2
    run.send([("c", 20)])
    assert run.finals[2:] == [(W("a", 10, 20), 1), (W("b", 10, 20), 1)]
    assert run.driver.late_records == 0


def test_tumbling_aggregate_and_reduce() -> None:
    """aggregate and reduce fold values per window; reduce keeps the first value as is."""
    run = Run(eos.TumblingWindows(10), op="collect").send([("a", 1), ("a", 3), ("a", 12)])
    assert run.finals == [(W("a", 0, 10), [1, 3])]
    run = Run(eos.TumblingWindows(10), op="reduce").send([("a", 1), ("a", 3), ("a", 12)])
    assert run.finals == [(W("a", 0, 10), 4)]
    assert run.latest() == {W("a", 0, 10): 4, W("a", 10, 20): 12}


def test_tumbling_grace_accepts_records_behind_stream_time_until_end_plus_grace() -> None:
    """With grace 5 a record for [0, 10) is added while stream time < 15 and late
    (dropped, counted) from 15; the final result waits for stream time 15."""
    run = Run(eos.TumblingWindows(10, grace_ms=5)).send([("a", 1), ("a", 12), ("a", 9)])
    assert run.finals == []
    assert run.driver.late_records == 0
    run.send([("a", 14), ("a", 8)])
    assert run.finals == []
    run.send([("a", 15)])  # stream time 15: [0, 10) closes
    assert run.finals == [(W("a", 0, 10), 3)]
    run.send([("a", 7)])
    assert run.driver.late_records == 1
    assert run.latest()[W("a", 0, 10)] == 3
    run.send([("a", 25)])
    assert run.finals[-1] == (W("a", 10, 20), 3)


def test_late_record_is_dead_lettered_under_that_policy() -> None:
    """With late_record_policy="dead_letter", a late record goes to the dead-letter topic."""
    run = Run(
        eos.TumblingWindows(10),
        late_record_policy="dead_letter",
        processing_error_policy="dead_letter",
        dead_letter_topic="dlq",
    ).send([("a", 25), ("a", 3)])
    assert run.driver.late_records == 1
    assert len(run.driver.outputs("dlq")) == 1
    assert run.latest() == {W("a", 20, 30): 1}


def test_a_record_late_for_some_hopping_windows_only_is_counted_not_dead_lettered() -> None:
    """Added to its open windows, it must not also be in the dead-letter topic."""
    run = Run(
        eos.HoppingWindows(20, 10),
        late_record_policy="dead_letter",
        processing_error_policy="dead_letter",
        dead_letter_topic="dlq",
    ).send([("a", 35), ("a", 25)])  # 25 is in [10, 30) (closed) and [20, 40) (open)
    assert run.driver.late_records == 1
    assert run.driver.outputs("dlq") == []
    assert run.latest()[W("a", 20, 40)] == 2


def test_negative_timestamps_fall_in_negative_windows() -> None:
    """Windows are aligned to the epoch on both sides of it: -5 is in [-10, 0)."""
    run = Run(eos.TumblingWindows(10)).send([("a", -5), ("a", -10), ("a", -1), ("a", 0)])
    assert run.finals == [(W("a", -10, 0), 3)]


def test_windows_are_deleted_when_they_close() -> None:
    """The window store holds only open windows (retention_ms 0): the store and its
    changelog stay bounded however long the stream runs."""
    run = Run(eos.TumblingWindows(10))
    for t in range(0, 1_000, 3):
        run.send([(f"k{t % 7}", t)])
        assert all(w.end > t for w in run.driver.store("w"))
    assert len(run.driver.store("w")) <= 7


def test_retention_keeps_closed_windows_and_final_emits_once() -> None:
    """With retention_ms, closed windows stay readable until close + retention, but
    their final result is emitted once, at close, and they are never updated."""
    run = Run(eos.TumblingWindows(10), retention_ms=20).send([("a", 1), ("a", 12)])
    assert run.finals == [(W("a", 0, 10), 1)]
    assert run.driver.store("w") == {W("a", 0, 10): 1, W("a", 10, 20): 1}
    run.send([("a", 5), ("a", 29)])  # 5 is late; 29 expires nothing yet (0 + 10 + 20 > 29)
    assert run.driver.late_records == 1
    assert run.finals == [(W("a", 0, 10), 1), (W("a", 10, 20), 1)]
    assert W("a", 0, 10) in run.driver.store("w")
    run.send([("a", 30)])
    assert W("a", 0, 10) not in run.driver.store("w")
    assert run.finals == [(W("a", 0, 10), 1), (W("a", 10, 20), 1), (W("a", 20, 30), 1)]


def test_stream_time_is_per_partition() -> None:
    """A window closes on its own partition's stream time, not another's."""
    run = Run(eos.TumblingWindows(10), partitions=2)
    run.send([("a", 1)], partition=0)
    run.send([("b", 50)], partition=1)
    assert run.finals == []
    run.send([("a", 10)], partition=0)
    assert run.finals == [(W("a", 0, 10), 1)]


# -- hopping ------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "advance"), [(10, 5), (10, 10), (12, 4), (10, 3), (1, 1)])
def test_hopping_windows_match_a_brute_force_count(size: int, advance: int) -> None:
    """Each record is counted in every window [s, s + size) with s a multiple of
    advance and s <= t < s + size (size/advance windows when advance divides size);
    final counts match a brute-force computation on random in-order input."""
    rng = random.Random(size * 100 + advance)
    times = sorted(rng.randrange(-50, 200) for _ in range(120))
    events = [(rng.choice("abc"), t) for t in times]
    run = Run(eos.HoppingWindows(size, advance)).send(events).send([("z", 10_000)])
    expected: dict[eos.Windowed[str], int] = defaultdict(int)
    for key, t in events:
        for s in range(t - t % advance, t - size, -advance):
            expected[W(key, s, s + size)] += 1
    if size % advance == 0:
        assert all(
            sum(1 for w in expected if w.key == k and w.start <= t < w.end) == size // advance
            for k, t in events
        )
    assert dict(run.finals) == dict(expected)
    assert len(run.finals) == len(expected)  # each window once
    assert {w: n for w, n in run.latest().items() if w.key != "z"} == expected


def test_hopping_record_late_for_old_windows_still_counts_in_new_ones() -> None:
    """A record can be late for its older hopping windows and on time for newer ones:
    it is added to the open ones and counted late once."""
    run = Run(eos.HoppingWindows(10, 5)).send([("a", 7), ("a", 11), ("a", 9)])
    # at stream time 11, [0, 10) is closed: 9 goes to [5, 15) only
    assert run.driver.late_records == 1
    assert run.latest() == {W("a", 0, 10): 1, W("a", 5, 15): 3, W("a", 10, 20): 1}


# -- sliding ------------------------------------------------------------------------


def sliding_reference(events: list[Event], d: int) -> dict[eos.Windowed[str], list[int]]:
    """All windows of Kafka Streams' sliding windows, computed from the definition:
    [t - d, t] for every record, and [t + 1, t + 1 + d] when a record lies in it."""
    by_key: dict[str, list[int]] = defaultdict(list)
    for key, t in events:
        by_key[key].append(t)
    result: dict[eos.Windowed[str], list[int]] = {}
    for key, times in by_key.items():
        bounds = {(t - d, t) for t in times}
        bounds |= {(t + 1, t + 1 + d) for t in times if any(t < r <= t + 1 + d for r in times)}
        for start, end in bounds:
            result[W(key, start, end)] = sorted(r for r in times if start <= r <= end)
    return result


def test_sliding_windows_documented_example() -> None:
    """Kafka Streams' documented example: d = 5000, records at 8000, 9200, 12400."""
    run = Run(eos.SlidingWindows(5000), op="collect").send(
        [("A", 8000), ("A", 9200), ("A", 12400), ("B", 30_000)]
    )
    assert run.finals == [
        (W("A", 3000, 8000), [8000]),
        (W("A", 4200, 9200), [8000, 9200]),
        (W("A", 7400, 12400), [8000, 9200, 12400]),
        (W("A", 8001, 13001), [9200, 12400]),
        (W("A", 9201, 14201), [12400]),
    ]


@pytest.mark.parametrize("seed", range(12))
def test_sliding_windows_match_brute_force_on_random_out_of_order_input(seed: int) -> None:
    """On random input with duplicates, negative times and disorder within grace,
    the final results and the last update per window equal the windows computed
    from the definition; each window is emitted once; nothing is late."""
    rng = random.Random(seed)
    d = rng.choice([0, 1, 3, 10, 25])
    disorder = rng.choice([0, 5, 30])
    times = sorted(rng.randrange(-40, 300) for _ in range(rng.randrange(20, 90)))
    events = [(rng.choice("ab"), t) for t in times]
    # Shuffle within the disorder bound: sort by time plus a random delay.
    arrival = sorted(events, key=lambda e: e[1] + rng.randint(0, disorder))
    run = Run(eos.SlidingWindows(d, grace_ms=disorder), op="collect").send(arrival)
    assert run.driver.late_records == 0
    expected = sliding_reference(arrival, d)
    assert {k: sorted(v) for k, v in run.latest().items()} == expected
    run.send([("z", 10_000)])
    finals = [(k, v) for k, v in run.finals if k.key != "z"]
    assert len(finals) == len(expected)
    assert {k: sorted(v) for k, v in finals} == expected


def test_sliding_grace_and_lateness_per_window() -> None:
    """A sliding window is open while end + grace >= stream time: a record behind
    stream time is added to its open windows; one whose own window [t - d, t] is
    closed is counted late (and still added to open windows holding it); one whose
    every window [.., t + d] is closed is dropped."""
    run = Run(eos.SlidingWindows(10, grace_ms=5)).send([("a", 100), ("a", 96)])
    assert run.driver.late_records == 0
    run.send([("a", 94)])  # [84, 94] is closed (94 + 5 < 100), [90, 100] is not
    assert run.driver.late_records == 1
    assert run.latest() == {
        W("a", 90, 100): 3,
        W("a", 86, 96): 2,
        W("a", 97, 107): 1,
        W("a", 95, 105): 2,
    }
    run.send([("a", 84)])  # 84 + 10 + 5 < 100: no window holding it is open
    assert run.driver.late_records == 2
    assert len(run.latest()) == 4


# -- sessions -----------------------------------------------------------------------


def test_session_merge_emits_retractions_of_merged_sessions() -> None:
    """A record bridging two sessions merges them: each merged-away session is
    retracted with (Windowed, None) before the merged session's update."""
    run = Run(eos.SessionWindows(5, grace_ms=20), op="collect").send(
        [("a", 0), ("a", 3), ("a", 12), ("a", 14), ("a", 8)]
    )
    assert run.updates == [
        (W("a", 0, 0), [0]),
        (W("a", 0, 0), None),
        (W("a", 0, 3), [0, 3]),
        (W("a", 12, 12), [12]),
        (W("a", 12, 12), None),
        (W("a", 12, 14), [12, 14]),
        (W("a", 0, 3), None),
        (W("a", 12, 14), None),
        (W("a", 0, 14), [0, 3, 12, 14, 8]),
    ]
    assert run.driver.store("w") == {W("a", 0, 14): [0, 3, 12, 14, 8]}


def test_session_record_inside_a_session_updates_it_in_place() -> None:
    """A record within an existing session's bounds updates it without a retraction;
    one before its start extends it backwards (a retraction, then the new bounds)."""
    run = Run(eos.SessionWindows(5, grace_ms=20)).send([("a", 0), ("a", 8), ("a", 4)])
    assert run.updates == [
        (W("a", 0, 0), 1),
        (W("a", 8, 8), 1),
        (W("a", 0, 0), None),
        (W("a", 8, 8), None),
        (W("a", 0, 8), 3),
    ]
    run.send([("a", 7)])
    assert run.updates[5:] == [(W("a", 0, 8), 4)]
    run.send([("a", -3)])
    assert run.updates[6:] == [(W("a", 0, 8), None), (W("a", -3, 8), 5)]
    assert run.driver.store("w") == {W("a", -3, 8): 5}


def test_session_closes_after_last_plus_gap_plus_grace() -> None:
    """A session [first, last] closes when stream time passes last + gap + grace;
    until then a record within the gap extends it; after, it is late or starts anew."""
    run = Run(eos.SessionWindows(5, grace_ms=2)).send([("a", 10), ("b", 17)])
    assert run.finals == []
    run.send([("a", 15)])  # 15 <= 10 + 5: joins, session [10, 15]
    run.send([("b", 22)])  # stream time 22 = 15 + 5 + 2: still open
    assert [w for w, _ in run.finals] == []
    run.send([("b", 23)])  # 23 > 22: closes
    assert run.finals == [(W("a", 10, 15), 2)]
    run.send([("a", 15)])  # [15, 15] closes at 15 + 5 + 2 + 1 = 23 <= 23: late
    assert run.driver.late_records == 1
    run.send([("a", 19)])  # a new session, on time (19 + 8 > 23)
    assert run.latest()[W("a", 19, 19)] == 1


def test_closed_session_kept_for_retention_is_not_extended() -> None:
    """A session kept past its close (retention_ms) is not extended by a record within
    its gap: the record starts a new session; each is emitted once by final()."""
    run = Run(eos.SessionWindows(5), retention_ms=100).send([("a", 4), ("b", 10)])
    assert run.finals == [(W("a", 4, 4), 1)]
    run.send([("a", 7)])  # within 5 of [4, 4], which closed at 4 + 5 + 1 = 10
    assert run.driver.late_records == 0
    assert run.driver.store("w") == {W("a", 4, 4): 1, W("b", 10, 10): 1, W("a", 7, 7): 1}
    run.send([("b", 13)])
    assert run.finals == [(W("a", 4, 4), 1), (W("a", 7, 7), 1)]


def test_session_reduce_merges_with_the_reducer() -> None:
    """reduce over sessions merges sessions' values with the reducer."""
    run = Run(eos.SessionWindows(5, grace_ms=10), op="reduce").send([("a", 1), ("a", 10), ("a", 5)])
    assert run.latest() == {W("a", 1, 10): 1 + 10 + 5}


@pytest.mark.parametrize("seed", range(8))
def test_sessions_match_brute_force_on_random_input(seed: int) -> None:
    """On random out-of-order input within grace, the sessions (final results and
    folded updates) equal the sessions computed by sorting and splitting at gaps."""
    rng = random.Random(seed)
    gap = rng.choice([1, 4, 10])
    disorder = rng.choice([0, 6, 25])
    times = sorted(rng.randrange(-30, 400) for _ in range(rng.randrange(10, 80)))
    events = [(rng.choice("ab"), t) for t in times]
    arrival = sorted(events, key=lambda e: e[1] + rng.randint(0, disorder))
    run = Run(eos.SessionWindows(gap, grace_ms=disorder), op="collect").send(arrival)
    expected: dict[eos.Windowed[str], list[int]] = {}
    for key in "ab":
        mine = sorted(t for k, t in events if k == key)
        session: list[int] = []
        for t in [*mine, None]:
            if session and (t is None or t - session[-1] > gap):
                expected[W(key, session[0], session[-1])] = session
                session = []
            if t is not None:
                session.append(t)
    assert run.driver.late_records == 0
    assert {k: sorted(v) for k, v in run.latest().items()} == expected
    run.send([("z", 10_000)])
    finals = [(k, sorted(v)) for k, v in run.finals if k.key != "z"]
    assert len(finals) == len(expected)
    assert dict(finals) == expected


# -- the per-record path ------------------------------------------------------------------


def test_tumbling_per_record_path_does_no_range_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Counting into tumbling windows that do not close does point reads and writes
    only: no range read of the store per record."""
    calls: list[object] = []
    original = StoreTransaction.committed

    def counting(self: StoreTransaction[Any, Any], *args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return original(self, *args, **kwargs)

    run = Run(eos.HoppingWindows(100, 50)).send([("a", 1)])
    monkeypatch.setattr(StoreTransaction, "committed", counting)
    run.send([(f"k{i % 40}", 2 + i % 40) for i in range(200)])
    assert calls == []
    assert run.latest()[W("k0", 0, 100)] == 5


def test_windows_over_the_default_bytes_keys() -> None:
    """The application's default serdes are bytes: a windowed count keeps bytes keys."""
    builder = eos.StreamBuilder()
    (
        builder.stream("payments")
        .group_by_key()
        .windowed_by(eos.TumblingWindows(size_ms=1_000))
        .count(store="per-second")
        .final()
        .to_stream()
        .map(lambda wk, n: (wk.key, str(n).encode()))
        .to("out")
    )
    driver = TestDriver(builder.build())
    driver.send(b"x", key=b"a", timestamp=10)
    driver.send(b"x", key=b"a", timestamp=20)
    driver.send(b"x", key=b"\xff", timestamp=30)
    driver.send(b"x", key=b"b", timestamp=2_000)
    assert driver.output_pairs("out") == [(b"a", b"2"), (b"\xff", b"1")]
    assert driver.store("per-second") == {W(b"b", 2_000, 3_000): 1}
