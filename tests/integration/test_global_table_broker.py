"""Global tables against a real broker: load, resume, follow, reload.

Every test produces to its own 3-partition topic with a transactional
producer (some transactions aborted) and checks the table against the latest
COMMITTED value of each key, tombstones deleting it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

import eos
from eos._stop import StopRequested, StopSignal
from eos.errors import ConfigError
from eos.serde import StringSerde
from eos.state.global_loader import POLL_MAX_RECORDS, GlobalTables
from eos.state.global_table import GlobalStore
from eos.stats import EngineStats
from eos.testing.helpers import create_topic, unique_name

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

PARTITIONS = 3
Pair = tuple[str | None, str | None]


class Setup:
    """A topic, an application id and a state directory unique to one test."""

    def __init__(self, bootstrap: str, tmp_path: Path) -> None:
        self.bootstrap = bootstrap
        self.app_id = unique_name("global")
        self.topic = create_topic(bootstrap, unique_name("gt"), PARTITIONS)
        self.state_dir = str(tmp_path / "state")
        self.expected: dict[str, str] = {}
        self.committed_keyed = 0
        self._producer: Producer | None = None

    def producer(self) -> Producer:
        if self._producer is None:
            self._producer = Producer(
                {
                    "bootstrap.servers": self.bootstrap,
                    "transactional.id": unique_name("gt-producer"),
                    "linger.ms": 5,
                }
            )
            self._producer.init_transactions(30)
        return self._producer

    def transaction(self, records: Iterable[Pair], *, commit: bool = True) -> None:
        """Produce ``records`` in one transaction; commit (and update ``expected``) or abort."""
        producer = self.producer()
        producer.begin_transaction()
        records = list(records)
        for key, value in records:
            producer.produce(self.topic, value, key)
        if not commit:
            producer.flush(30)
            producer.abort_transaction(30)
            return
        producer.commit_transaction(30)
        for key, value in records:
            if key is None:
                continue
            self.committed_keyed += 1
            if value is None:
                self.expected.pop(key, None)
            else:
                self.expected[key] = value

    def tables(self, backend: str = "rocksdb", **kw: object) -> GlobalTables:
        config = eos.Config(
            application_id=self.app_id,
            bootstrap_servers=self.bootstrap,
            input_topics=["unused"],
            state_dir=self.state_dir,
        )
        return GlobalTables(
            config,
            [GlobalStore("g", self.topic, backend=backend)],
            stats=EngineStats(self.app_id),
            app_serdes=(StringSerde(), StringSerde()),
            **kw,  # type: ignore[arg-type]
        )

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(10)


@pytest.fixture
def setup(bootstrap: str, tmp_path: Path) -> Iterator[Setup]:
    s = Setup(bootstrap, tmp_path)
    yield s
    s.close()


def started(tables: GlobalTables) -> GlobalTables:
    tables.start(StopSignal(5.0))
    return tables


def contents(tables: GlobalTables) -> dict[str, str]:
    return dict(tables.view("g").items())


def check_restart(setup: Setup, restored: int | None = None) -> None:
    """Start the tables again: they hold ``setup.expected``, having read ``restored`` records
    (any number when None)."""
    again = started(setup.tables())
    try:
        if restored is not None:
            assert again.restored == restored
        assert contents(again) == setup.expected
    finally:
        again.close()


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Call ``condition`` (which does the work, e.g. poll()) until true; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not reached in {timeout}s")


def values(prefix: str, keys: Iterable[int]) -> list[tuple[str, str]]:
    return [(f"k{i}", f"{prefix}-{i}") for i in keys]


def test_start_loads_the_committed_latest_value_per_key(setup: Setup) -> None:
    """start() returns with exactly the latest committed value of every key: aborted records never
    appear, tombstones delete, records without a key are skipped and counted."""
    setup.transaction(values("v1", range(30)))
    setup.transaction(values("aborted", range(10)), commit=False)
    setup.transaction([*values("v2", range(10, 15)), *((f"k{i}", None) for i in range(15, 20))])
    setup.transaction([(None, "no key"), ("k29", "v3-29")])
    setup.transaction(values("aborted", range(20, 30)), commit=False)
    tables = started(setup.tables())
    try:
        assert contents(tables) == setup.expected
        assert "aborted-0" not in contents(tables).values()
        assert tables.restored == setup.committed_keyed == 30 + 10 + 1
        assert tables.skipped == 1
        assert tables.view("g")["k29"] == "v3-29"
        assert "k15" not in tables.view("g")
    finally:
        tables.close()


def test_an_open_transaction_does_not_hold_start_back(setup: Setup) -> None:
    """start() loads up to the last stable offset and returns while a transaction is still open;
    poll() applies that transaction's records once it commits."""
    setup.transaction(values("v1", range(10)))
    producer = setup.producer()
    producer.begin_transaction()
    for key, value in values("pending", range(5)):
        producer.produce(setup.topic, value, key)
    producer.flush(30)  # written to the log, not yet committed
    tables = started(setup.tables(stall_timeout_s=20.0))
    try:
        assert contents(tables) == setup.expected
        producer.commit_transaction(30)
        setup.expected.update(values("pending", range(5)))
        wait_for(
            lambda: tables.poll() >= 0 and contents(tables) == setup.expected,
            "poll() applies the transaction once committed",
        )
    finally:
        tables.close()


@pytest.mark.parametrize(("backend", "persistent"), [("rocksdb", True), ("memory", False)])
def test_restart_resumes_from_the_checkpoint(setup: Setup, backend: str, persistent: bool) -> None:
    """A persistent store re-reads only the records produced since it was closed (a memory store
    reloads everything), and ends at the same contents either way."""
    setup.transaction(values("v1", range(30)))
    setup.transaction(values("aborted", range(30)), commit=False)
    first = started(setup.tables(backend))
    first.close()
    setup.transaction([*values("v2", range(25, 35)), ("k0", None)])
    second = started(setup.tables(backend))
    try:
        assert second.restored == (11 if persistent else setup.committed_keyed)
        assert contents(second) == setup.expected
    finally:
        second.close()
    checkpoint = Path(second.path("g") + ".offsets.json")
    assert checkpoint.exists() == persistent


def test_poll_follows_the_topic_without_blocking(setup: Setup) -> None:
    """After start, poll() applies newly committed records (never aborted ones), at most
    POLL_MAX_RECORDS per call, and returns at once when there is nothing."""
    setup.transaction(values("v1", range(10)))
    tables = started(setup.tables())
    try:
        setup.transaction(values("aborted", range(10)), commit=False)
        setup.transaction([*values("v2", range(2500)), ("k3", None)])
        counts: list[int] = []

        def caught_up() -> bool:
            counts.append(tables.poll())
            assert tables.view("g").get("k1") != "aborted-1"
            return tables.view("g").get("k2499") == "v2-2499" and "k3" not in tables.view("g")

        wait_for(caught_up, "poll() applies the new transaction")
        assert max(counts) <= POLL_MAX_RECORDS
        wait_for(lambda: tables.poll() == 0 and tables.poll() == 0, "nothing left to poll")
        assert tables.applied == 2501
        assert contents(tables) == setup.expected
        began = time.monotonic()
        assert [tables.poll() for _ in range(20)] == [0] * 20
        assert time.monotonic() - began < 0.5  # 20 idle polls, none waiting for the broker
    finally:
        tables.close()
    # close() checkpointed what poll() applied: a restart reads nothing.
    check_restart(setup, restored=0)


def recreate(setup: Setup) -> None:
    """Delete the topic and create it again (empty) under the same name."""
    admin = AdminClient({"bootstrap.servers": setup.bootstrap})
    for future in admin.delete_topics([setup.topic], operation_timeout=30).values():
        future.result(30)
    deadline = time.monotonic() + 60
    while True:  # the deletion completes in the background
        try:
            create_topic(setup.bootstrap, setup.topic, PARTITIONS)
            break
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
            if time.monotonic() > deadline:
                raise
    setup.expected.clear()
    setup.committed_keyed = 0
    setup._producer = None


def test_recreated_topic_wipes_and_reloads(setup: Setup, caplog: pytest.LogCaptureFixture) -> None:
    """A checkpoint of a deleted and recreated topic is not trusted: the store is wiped with a
    warning and holds only the new topic's records (no stale key survives)."""
    setup.transaction(values("old", range(40)))
    started(setup.tables()).close()
    recreate(setup)
    setup.transaction(values("new", range(5)))
    with caplog.at_level(logging.WARNING, logger="eos.state"):
        tables = started(setup.tables())
    try:
        assert contents(tables) == setup.expected == dict(values("new", range(5)))
        assert tables.restored == 5
        assert any(
            "recreated" in r.getMessage() and "wiping" in r.getMessage() for r in caplog.records
        )
    finally:
        tables.close()


def test_topic_recreated_while_running_is_reloaded_by_poll(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    """When the topic is deleted and recreated under a running table, poll() notices the offsets
    out of range, wipes the store and reloads it: it then holds only the new topic's records."""
    setup.transaction(values("old", range(40)))
    tables = started(setup.tables())
    try:
        recreate(setup)
        setup.transaction(values("new", range(5)))
        with caplog.at_level(logging.WARNING, logger="eos.state"):
            wait_for(
                lambda: tables.poll() >= 0 and contents(tables) == setup.expected,
                "the recreated topic is reloaded",
                timeout=60,
            )
        assert any("wiping" in r.getMessage() for r in caplog.records)
    finally:
        tables.close()
    check_restart(setup, restored=0)


def test_checkpoint_beyond_the_end_wipes_and_reloads(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    """A checkpoint offset past a partition's end (the log was truncated) wipes the store and
    reloads it from the start, with a warning."""
    setup.transaction(values("v", range(20)))
    tables = setup.tables()
    started(tables).close()
    path = Path(tables.path("g") + ".offsets.json")
    doc = json.loads(path.read_text())
    doc["offsets"]["1"] = 1_000_000
    path.write_text(json.dumps(doc))
    with caplog.at_level(logging.WARNING, logger="eos.state"):
        again = started(setup.tables())
    try:
        assert again.restored == 20
        assert contents(again) == setup.expected
        assert any("beyond" in r.getMessage() for r in caplog.records)
    finally:
        again.close()


def test_missing_topic_is_a_config_error(setup: Setup, bootstrap: str, tmp_path: Path) -> None:
    """A global store whose topic does not exist fails start() with a ConfigError naming both."""
    config = eos.Config(
        application_id=setup.app_id,
        bootstrap_servers=bootstrap,
        input_topics=["unused"],
        state_dir=str(tmp_path),
    )
    missing = unique_name("missing")
    tables = GlobalTables(
        config,
        [GlobalStore("lookup", missing)],
        stats=EngineStats(setup.app_id),
        app_serdes=(StringSerde(), StringSerde()),
    )
    try:
        with pytest.raises(ConfigError, match=f"topic '{missing}' of global store 'lookup'"):
            tables.start(StopSignal(5.0))
    finally:
        tables.close()


def test_a_stop_request_ends_the_load(setup: Setup) -> None:
    """A stop requested before the load finished raises StopRequested; close() keeps what was
    applied checkpointed, and the next start completes the table."""
    setup.transaction(values("v", range(50)))
    stop = StopSignal(5.0)
    stop.set()
    tables = setup.tables()
    with pytest.raises(StopRequested):
        tables.start(stop)
    tables.close()
    check_restart(setup)
