"""Global tables without a broker: declarations, the read-only view, the checkpoint rules."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from confluent_kafka import IsolationLevel, KafkaError, KafkaException, TopicPartition

import eos
from eos._stop import StopRequested, StopSignal
from eos.errors import ConfigError, StateError
from eos.serde import JsonSerde, StringSerde
from eos.state.base import Store
from eos.state.global_loader import GlobalTables
from eos.state.global_table import (
    Checkpoint,
    GlobalStore,
    GlobalView,
    StartPlan,
    plan_start,
    read_checkpoint,
    write_checkpoint,
)
from eos.state.memory import MemoryStore
from eos.stats import EngineStats

STRINGS = (StringSerde(), StringSerde())

# -- declarations ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "topic", "match"),
    [
        ("a/b", "t", "invalid store name"),
        ("", "t", "invalid store name"),
        ("..", "t", "invalid store name"),
        ("__eos-meta", "t", "reserved for eos"),
        ("ok", "", "invalid topic"),
        ("ok", "a b", "invalid topic"),
        ("ok", "x" * 250, "invalid topic"),
        ("ok", "..", "invalid topic"),
    ],
)
def test_bad_names_and_topics_are_config_errors(name: str, topic: str, match: str) -> None:
    """A name eos.Store refuses, a reserved name or an invalid topic fails at declaration."""
    with pytest.raises(ConfigError, match=match):
        GlobalStore(name, topic)


def test_bad_backend_and_serde_are_config_errors() -> None:
    """An unknown backend or serde name fails at declaration, as for eos.Store."""
    with pytest.raises(ConfigError, match="invalid backend"):
        GlobalStore("g", "t", backend="disk")
    with pytest.raises(ConfigError):
        GlobalStore("g", "t", key_serde="nope")


def test_backend_and_serdes_are_keyword_only() -> None:
    """Only name and topic are positional, so a serde cannot be passed as the backend."""
    with pytest.raises(TypeError):
        GlobalStore("g", "t", "memory")  # type: ignore[call-arg]


def test_declaration_is_frozen_and_becomes_a_plain_store() -> None:
    """A GlobalStore cannot be changed, and as_store() carries its name, backend and serdes."""
    spec = GlobalStore("g", "t", backend="memory", value_serde="string")
    with pytest.raises(AttributeError):
        spec.name = "h"  # type: ignore[misc]
    assert spec.as_store() == Store("g", backend="memory", value_serde="string")


def test_none_serdes_are_the_applications() -> None:
    """A None serde is the application's; a given one wins; without app serdes None is JSON."""
    app_key, app_value = StringSerde(), JsonSerde()
    key, value = GlobalStore("g", "t", value_serde="string").serdes((app_key, app_value))
    assert key is app_key
    assert isinstance(value, StringSerde)
    key, value = GlobalStore("g", "t").serdes()
    assert isinstance(key, JsonSerde) and isinstance(value, JsonSerde)


def test_decode_entries_uses_the_resolved_serdes() -> None:
    """decode_entries deserializes stored bytes with the store's serdes (app serdes filling in)."""
    spec = GlobalStore("g", "t", value_serde="json")
    assert list(spec.decode_entries([(b"k", b"[1]")], STRINGS)) == [("k", [1])]


# -- the view ----------------------------------------------------------------------


def make_view() -> GlobalView[str, object]:
    backend = MemoryStore("countries", -1)
    backend.write({b"de": b'"Germany"', b"fr": b'"France"', b"n": b"7"}, 1)
    return GlobalView("countries", "country-topic", backend, StringSerde(), JsonSerde())


def test_view_reads_through_the_serdes() -> None:
    """get, [], in, items, keys, values and iteration decode keys and values in key-byte order."""
    view = make_view()
    assert view.get("de") == "Germany"
    assert view.get("xx") is None
    assert view.get("xx", "?") == "?"
    assert view["n"] == 7
    assert "fr" in view and "xx" not in view
    with pytest.raises(KeyError):
        view["xx"]
    assert list(view.items()) == [("de", "Germany"), ("fr", "France"), ("n", 7)]
    assert list(view.keys()) == list(view) == ["de", "fr", "n"]
    assert list(view.values()) == ["Germany", "France", 7]


def test_a_key_that_serializes_to_none_is_absent() -> None:
    """No stored record has a None key, so a None lookup finds nothing instead of failing."""
    view = make_view()
    assert view.get(None, "default") == "default"  # type: ignore[call-overload]
    assert None not in view
    with pytest.raises(KeyError):
        view[None]  # type: ignore[index]


def test_view_refuses_writes_naming_the_store_and_topic() -> None:
    """Setting or deleting a key raises StateError naming the store and its topic."""
    view = make_view()
    with pytest.raises(StateError, match=r"countries.*country-topic.*read-only"):
        view["de"] = "Deutschland"
    with pytest.raises(StateError, match=r"countries.*read-only"):
        del view["de"]
    assert view["de"] == "Germany"


def test_view_of_a_closed_backend_raises_state_error() -> None:
    """After the backend closed (GlobalTables.close), a read is a StateError, not stale data."""
    backend = MemoryStore("g", -1)
    view: GlobalView[str, str] = GlobalView("g", "t", backend, *STRINGS)
    backend.close()
    with pytest.raises(StateError, match="closed"):
        view.get("k")


# -- checkpoint file ---------------------------------------------------------------


def test_checkpoint_round_trips_and_replaces_atomically(tmp_path: Path) -> None:
    """write_checkpoint leaves exactly the new file (no temporary) and read_checkpoint reads it."""
    path = str(tmp_path / "g" / "global.offsets.json")
    first = Checkpoint("t", "id-1", 3, {0: 10, 2: 7})
    write_checkpoint(path, first)
    second = Checkpoint("t", "id-1", 4, {0: 12, 1: 0, 2: 7})
    write_checkpoint(path, second)
    assert read_checkpoint(path) == second
    assert os.listdir(tmp_path / "g") == ["global.offsets.json"]


@pytest.mark.parametrize(
    "text",
    ["", "{", "[]", '{"version": 2}', '{"version": 1, "topic": "t"}',
     '{"version": 1, "topic": "t", "topic_id": null, "write": 1, "offsets": {"0": -5}}'],
)  # fmt: skip
def test_unreadable_checkpoint_reads_as_none(tmp_path: Path, text: str) -> None:
    """A truncated, foreign or malformed file counts as no checkpoint (so the store is reloaded)."""
    path = tmp_path / "c.json"
    path.write_text(text)
    assert read_checkpoint(str(path)) is None
    assert read_checkpoint(str(tmp_path / "missing.json")) is None


LOWS = {0: 0, 1: 0, 2: 0}
HIGHS = {0: 100, 1: 100, 2: 100}


def plan(checkpoint: Checkpoint | None, stored: int | None, **kw: object) -> StartPlan:
    args: dict[str, object] = {"topic": "t", "topic_id": "id-1", "lows": LOWS, "highs": HIGHS}
    args.update(kw)
    return plan_start(checkpoint, stored, **args)  # type: ignore[arg-type]


def test_empty_store_loads_from_the_start_whatever_the_file_says() -> None:
    """An empty backend (memory, or wiped before a crash) ignores any checkpoint file."""
    result = plan(Checkpoint("t", "id-1", 5, {0: 50}), None)
    assert result == StartPlan(dict(LOWS))


def test_valid_checkpoint_resumes_and_a_file_behind_the_data_is_fine() -> None:
    """Each partition resumes at its offset (new partitions at the start), also when the file
    is older than the data (replay is idempotent)."""
    checkpoint = Checkpoint("t", "id-1", 5, {0: 50, 1: 100})
    for stored in (5, 9):
        result = plan_start(checkpoint, stored, topic="t", topic_id="id-1", lows=LOWS, highs=HIGHS)
        assert result.wipe is None
        assert result.starts == {0: 50, 1: 100, 2: 0}
        assert result.below_start == {}


def test_checkpoint_below_the_log_start_continues_at_the_start() -> None:
    """Records deleted by retention before they were read are reported and skipped, not fatal."""
    checkpoint = Checkpoint("t", "id-1", 5, {0: 10, 1: 40})
    result = plan_start(
        checkpoint, 5, topic="t", topic_id="id-1", lows={0: 20, 1: 20}, highs={0: 99, 1: 99}
    )
    assert result.wipe is None
    assert result.starts == {0: 20, 1: 40}
    assert result.below_start == {0: (10, 20)}


@pytest.mark.parametrize(
    ("checkpoint", "stored", "kw", "match"),
    [
        (None, 3, {}, "no readable checkpoint"),
        (Checkpoint("other", "id-1", 3, {0: 1}), 3, {}, "loaded from topic 'other'"),
        (Checkpoint("t", "id-0", 3, {0: 1}), 3, {}, "deleted and recreated"),
        (Checkpoint("t", "id-1", 4, {0: 1}), 3, {}, "older than its checkpoint"),
        (Checkpoint("t", "id-1", 3, {0: 1, 3: 5}), 3, {}, "3 partitions now, fewer"),
        (Checkpoint("t", None, 3, {1: 101}), 3, {}, "offset 101 of partition 1 is beyond"),
        (Checkpoint("t", "id-1", 3, {1: 101}), 3, {"topic_id": None}, "beyond that partition"),
    ],
)
def test_untrustworthy_local_state_is_wiped_and_reloaded(
    checkpoint: Checkpoint | None, stored: int, kw: dict[str, object], match: str
) -> None:
    """Data without a file, another topic, a new topic id, lost writes, fewer partitions or an
    offset beyond the end: wipe, and load every partition from its start."""
    result = plan(checkpoint, stored, **kw)
    assert result.wipe is not None
    assert match in result.wipe
    assert result.starts == LOWS


# -- GlobalTables without Kafka ----------------------------------------------------


def config(tmp_path: Path, **kw: object) -> eos.Config:
    return eos.Config(
        application_id="app",
        bootstrap_servers="localhost:9092",
        input_topics=["in"],
        state_dir=str(tmp_path),
        **kw,  # type: ignore[arg-type]
    )


def tables(tmp_path: Path, *specs: GlobalStore, **kw: object) -> GlobalTables:
    return GlobalTables(config(tmp_path, **kw), specs, stats=EngineStats("app"), app_serdes=STRINGS)


def test_two_global_stores_may_not_share_a_name_or_a_topic(tmp_path: Path) -> None:
    """A repeated name or topic is a ConfigError naming both stores."""
    with pytest.raises(ConfigError, match="'a' and 'a' share a name"):
        tables(tmp_path, GlobalStore("a", "t1"), GlobalStore("a", "t2"))
    with pytest.raises(ConfigError, match="'a' and 'b' share a topic 't1'"):
        tables(tmp_path, GlobalStore("a", "t1"), GlobalStore("b", "t1"))


def test_consumer_settings_never_join_the_application_group(tmp_path: Path) -> None:
    """The global consumer reads committed data under its own group and client ids, from the
    application's connection settings, and never commits."""
    gt = tables(
        tmp_path,
        GlobalStore("a", "t1"),
        consumer_config={"socket.timeout.ms": 12345, "group.instance.id": "x"},
    )
    settings = gt._settings
    assert settings["group.id"] == "app-global"
    assert settings["client.id"] == "app-0-global"
    assert settings["isolation.level"] == "read_committed"
    assert settings["enable.auto.commit"] is False
    assert settings["socket.timeout.ms"] == 12345
    assert "group.instance.id" not in settings


def test_paths_views_and_lifecycle_before_start(tmp_path: Path) -> None:
    """The store lives at <state_dir>/<app>/<name>/global; before start() a view is a StateError,
    poll() does nothing, and close() is idempotent."""
    gt = tables(tmp_path, GlobalStore("a", "t1"))
    assert gt.path("a") == os.path.join(str(tmp_path), "app", "a", "global")
    assert gt.names == ["a"]
    with pytest.raises(StateError, match="no global store named 'b'"):
        gt.view("b")
    with pytest.raises(StateError, match="not open"):
        gt.view("a")
    assert gt.poll() == 0
    gt.close()
    gt.close()
    with pytest.raises(StateError, match="once"):
        gt.start(StopSignal(1.0))


class FakeMessage:
    """The parts of a confluent_kafka.Message that GlobalTables reads."""

    def __init__(
        self,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        error: object = None,
    ) -> None:
        self._partition, self._offset, self._key, self._value = partition, offset, key, value
        self._error = error

    def topic(self) -> str:
        return "t1"

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def error(self) -> object:
        return self._error


class FakeConsumer:
    """position() answers from a dict, as librdkafka's app position."""

    def __init__(self, positions: dict[int, int]) -> None:
        self.positions = positions

    def position(self, tps: list[TopicPartition]) -> list[TopicPartition]:
        return [
            TopicPartition(tp.topic, tp.partition, self.positions.get(tp.partition, -1001))
            for tp in tps
        ]


def test_a_chunk_is_one_write_of_the_latest_values_and_positions_follow_the_consumer(
    tmp_path: Path,
) -> None:
    """A chunk becomes one backend write (last value per key wins, None deletes, keyless records
    are counted and skipped) and positions move to the consumer's position, never to an
    end-of-partition event's offset (a stale one may follow a reassignment)."""
    gt = tables(tmp_path, GlobalStore("a", "t1", backend="memory"))
    table = gt._tables["a"]
    backend = MemoryStore("a", -1)
    backend.write({b"gone": b"x"}, 1)
    table.backend, table.write, table.positions = backend, 1, {0: 0, 1: 0}
    eof = KafkaError(KafkaError._PARTITION_EOF)
    messages = [
        FakeMessage(0, 0, b"k", b"1"),
        FakeMessage(0, 1, None, b"orphan"),
        FakeMessage(0, 2, b"k", b"2"),
        FakeMessage(0, 3, b"gone", None),
        FakeMessage(1, 99, None, None, error=eof),  # stale: offset from an earlier assignment
    ]
    consumer = FakeConsumer({0: 5, 1: 0})  # 4: a transaction marker
    applied, moved = gt._apply(consumer, messages, None)  # type: ignore[arg-type]
    assert (applied, moved, gt.skipped) == (3, True, 1)
    assert list(backend.iterate()) == [(b"k", b"2")]
    assert backend.changelog_offset() == table.write == 2
    assert table.positions == {0: 5, 1: 0}


class FakeFuture:
    def __init__(self, offset: int | None, error: KafkaError | None = None) -> None:
        self.offset, self._error = offset, error

    def result(self) -> FakeFuture:
        if self._error is not None:
            raise KafkaException(self._error)
        return self


class FakeAdmin:
    """list_offsets() answers ``{partition: (low, high, last stable)}`` after ``failures`` calls
    that fail with a transient error; list_topics() (a metadata refresh) is counted."""

    def __init__(self, offsets: dict[int, tuple[int, int, int]], failures: int = 0) -> None:
        self.offsets, self.failures, self.refreshed = offsets, failures, 0

    def list_offsets(
        self, request: dict[TopicPartition, object], *, isolation_level: object, **kw: object
    ) -> dict[TopicPartition, FakeFuture]:
        if self.failures:
            self.failures -= 1
            moving = KafkaError(KafkaError.NOT_LEADER_FOR_PARTITION, retriable=True)
            return {tp: FakeFuture(None, moving) for tp in request}
        committed = isolation_level == IsolationLevel.READ_COMMITTED
        answers = {}
        for tp, spec in request.items():
            low, high, stable = self.offsets[tp.partition]
            latest = stable if committed else high
            answers[tp] = FakeFuture(low if type(spec).__name__ == "EarliestSpec" else latest)
        return answers

    def list_topics(self, topic: str, timeout: float) -> None:
        self.refreshed += 1


class AssignedConsumer(FakeConsumer):
    def assign(self, tps: list[TopicPartition]) -> None:
        self.assigned = [(tp.partition, tp.offset) for tp in tps]


def test_prepare_reads_the_offsets_and_assigns_the_start_of_each_partition(
    tmp_path: Path,
) -> None:
    """The load starts each partition at its low watermark (an empty store) and runs to the last
    stable offset; a transient offset error is retried after a metadata refresh."""
    gt = tables(tmp_path, GlobalStore("a", "t1", backend="memory"))
    table = gt._tables["a"]
    table.backend, table.partitions, table.topic_id = MemoryStore("a", -1), [0, 1], "id"
    admin = FakeAdmin({0: (3, 10, 8), 1: (0, 5, 5)}, failures=1)
    consumer = AssignedConsumer({})
    gt._prepare(consumer, admin, [table], StopSignal(1.0))  # type: ignore[arg-type]
    assert consumer.assigned == [(0, 3), (1, 0)]
    assert (table.positions, table.ends, table.behind()) == ({0: 3, 1: 0}, {0: 8, 1: 5}, True)
    assert admin.refreshed == 1


def test_a_stop_request_ends_the_offset_retries(tmp_path: Path) -> None:
    """While start() retries reading offsets, a stop request raises StopRequested at once."""
    gt = tables(tmp_path, GlobalStore("a", "t1", backend="memory"))
    table = gt._tables["a"]
    table.backend, table.partitions = MemoryStore("a", -1), [0]
    stop = StopSignal(1.0)
    stop.set()
    admin = FakeAdmin({0: (0, 1, 1)}, failures=1000)
    with pytest.raises(StopRequested):
        gt._prepare(AssignedConsumer({}), admin, [table], stop)  # type: ignore[arg-type]
    assert admin.failures == 999
