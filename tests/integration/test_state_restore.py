"""Store restore from the changelog, against a real broker.

A counting processor keeps ``counts[key]`` in a store and sends each new
count, so the outputs of one key must read 1, 2, ..., n exactly once in a
``read_committed`` consumer, and the store must end at n.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka import TopicPartition as KafkaTopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource  # type: ignore[attr-defined]

import eos
from eos.state.changelog import ChangelogRestorer, RestoreTask, restore_consumer_settings
from eos.state.memory import MemoryStore
from eos.state.rocksdb import RocksDBStore
from eos.state.topics import changelog_topic
from eos.testing.helpers import create_topic, produce, read_topic, unique_name

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

PARTITIONS = 2
KEYS = [f"k{i}" for i in range(20)]


def make_counter(output: str, backend: str) -> eos.Processor:
    """A processor that counts records per key in store "counts" and sends each count."""

    class Counter(eos.Processor):
        stores = [eos.Store("counts", backend=backend)]

        def process(self, record: eos.Record, ctx: eos.Context) -> None:
            counts = ctx.store("counts")
            n = int(counts.get(record.key, 0)) + 1  # type: ignore[call-overload]
            counts[record.key] = n
            ctx.send(output, key=record.key, value=str(n))

    return Counter()


class Setup:
    """Topics, ids and a state directory unique to one test."""

    def __init__(self, bootstrap: str, tmp_path: Path) -> None:
        self.bootstrap = bootstrap
        self.app_id = unique_name("restore")
        self.input = create_topic(bootstrap, unique_name("in"), PARTITIONS)
        self.output = create_topic(bootstrap, unique_name("out"), PARTITIONS)
        self.state_dir = str(tmp_path / "state")
        self.sent: dict[str, int] = defaultdict(int)

    def feed(self, count: int) -> None:
        """Produce ``count`` records round-robin over KEYS (keyed, so partitioned by key)."""
        records = []
        for i in range(count):
            key = KEYS[i % len(KEYS)]
            self.sent[key] += 1
            records.append((key, f"v{i}"))
        produce(self.bootstrap, self.input, records)

    def app(self, backend: str = "rocksdb") -> eos.Application:
        return eos.Application(
            application_id=self.app_id,
            bootstrap_servers=self.bootstrap,
            input_topics=[self.input],
            processor=make_counter(self.output, backend),
            key_serde="string",
            value_serde="string",
            state_dir=self.state_dir,
            commit_interval_ms=100,
            max_batch_records=100,
        )

    def changelog_records(self) -> int:
        """Committed records in the store's changelog: what a restore from scratch applies.
        A transaction writes one record per key it updated (its last count), so fewer
        than the inputs and at least one per key."""
        topic = changelog_topic(self.app_id, "counts")
        return len(read_topic(self.bootstrap, topic, timeout=60))

    def store_contents(self) -> dict[str, int]:
        """Read every RocksDB store partition directly (the app must be stopped)."""
        result: dict[str, int] = {}
        for partition in range(PARTITIONS):
            path = os.path.join(self.state_dir, self.app_id, "counts", str(partition))
            store = RocksDBStore(path, "counts", partition)
            try:
                for key, value in store.iterate():
                    result[json.loads(key)] = json.loads(value)
            finally:
                store.close()
        return result

    def emitted(self) -> dict[str, list[int]]:
        """Every count sent per key, in offset order, as a read_committed consumer sees them."""
        counts: dict[str, list[int]] = defaultdict(list)
        for record in read_topic(self.bootstrap, self.output):
            assert record.key is not None and record.value is not None
            counts[record.key.decode()].append(int(record.value))
        return counts

    def assert_exact(self) -> None:
        """Each key's outputs are exactly 1..n for the n records sent with it."""
        emitted = self.emitted()
        assert set(emitted) == set(self.sent)
        for key, n in self.sent.items():
            assert emitted[key] == list(range(1, n + 1)), key


def restored(app: eos.Application) -> int:
    """Records the app restored from changelogs (EngineStats.restored)."""
    state = app.state
    if hasattr(state, "restored_count"):
        return int(state.restored_count)
    return app._stats.restored


@pytest.fixture
def setup(bootstrap: str, tmp_path: Path) -> Iterator[Setup]:
    yield Setup(bootstrap, tmp_path)


def run_until(
    app: eos.Application, done: Callable[[eos.Application], bool], timeout: float = 30.0
) -> None:
    """Run ``app`` on a thread until ``done(app)``, then stop it cleanly; re-raise its error."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            app.run()
        except BaseException as exc:  # handed to the test thread
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    try:
        while not done(app):
            if errors or not thread.is_alive():
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not reached in {timeout}s: {app.state}")
            time.sleep(0.05)
    finally:
        app.stop()
        thread.join(30)
    assert not thread.is_alive(), "app did not stop"
    if errors:
        raise errors[0]


def processed(n: int) -> Callable[[eos.Application], bool]:
    return lambda app: app.state.processed_count >= n


def assigned(app: eos.Application) -> bool:
    """Every partition assigned and its stores restored."""
    state = app.state
    return len(state.assigned_partitions) == PARTITIONS and not state.restoring_partitions


def test_clean_restart_restores_nothing(setup: Setup) -> None:
    """After a clean stop the RocksDB checkpoints are at the changelog end, so a restart restores 0
    records.
    """
    setup.feed(300)
    first = setup.app()
    run_until(first, processed(300))
    assert restored(first) == 0
    assert setup.store_contents() == setup.sent

    setup.feed(100)
    second = setup.app()
    run_until(second, processed(100))
    assert restored(second) == 0
    assert setup.store_contents() == setup.sent
    setup.assert_exact()


def test_lost_state_dir_is_rebuilt_from_changelog(setup: Setup) -> None:
    """Deleting the state directory makes the next start restore every changelog record, and counts
    continue exactly.
    """
    setup.feed(300)
    run_until(setup.app(), processed(300))
    shutil.rmtree(setup.state_dir)
    second = setup.app()
    run_until(second, assigned)
    written = setup.changelog_records()  # none compacted yet
    assert len(KEYS) <= written <= 300
    assert restored(second) == written
    assert setup.store_contents() == setup.sent

    setup.feed(100)
    third = setup.app()
    run_until(third, processed(100))
    assert restored(third) == 0
    setup.assert_exact()


def test_changelog_holds_one_record_per_key_and_transaction(setup: Setup) -> None:
    """A key updated many times in one transaction is one changelog record, with the last
    value; a restore from it rebuilds the exact counts."""
    records = [("hot", f"v{i}") for i in range(200)] + [("cold", "v")]
    setup.sent.update({"hot": 200, "cold": 1})
    produce(setup.bootstrap, setup.input, records)
    app = eos.Application(
        application_id=setup.app_id,
        bootstrap_servers=setup.bootstrap,
        input_topics=[setup.input],
        processor=make_counter(setup.output, "rocksdb"),
        key_serde="string",
        value_serde="string",
        state_dir=setup.state_dir,
        commit_interval_ms=60_000,
        max_batch_records=201,  # one transaction, committed when it holds every record
    )
    run_until(app, processed(201))
    changelog = read_topic(setup.bootstrap, changelog_topic(setup.app_id, "counts"))
    assert sorted((r.key, r.value) for r in changelog) == [(b'"cold"', b"1"), (b'"hot"', b"200")]
    assert setup.emitted() == {"hot": list(range(1, 201)), "cold": [1]}
    shutil.rmtree(setup.state_dir)
    second = setup.app()
    run_until(second, assigned)
    assert restored(second) == 2
    assert setup.store_contents() == {"hot": 200, "cold": 1}


def test_memory_store_restores_everything_each_start(setup: Setup) -> None:
    """A memory store is rebuilt from the whole changelog at every start; its counts stay exact."""
    setup.feed(200)
    first = setup.app("memory")
    run_until(first, processed(200))
    assert restored(first) == 0

    setup.feed(100)
    written = setup.changelog_records()
    second = setup.app("memory")
    run_until(second, processed(100))
    assert restored(second) == written

    setup.feed(100)
    written = setup.changelog_records()
    third = setup.app("memory")
    run_until(third, processed(100))
    assert restored(third) == written
    setup.assert_exact()


def test_checkpoint_beyond_changelog_end_is_a_state_error(setup: Setup) -> None:
    """A checkpoint past the changelog's end (topic recreated) fails the start with a StateError
    naming the directory to delete.
    """
    setup.feed(50)
    run_until(setup.app(), processed(50))
    path = os.path.join(setup.state_dir, setup.app_id, "counts", "0")
    store = RocksDBStore(path, "counts", 0)
    store.write({}, 10**9)
    store.close()

    with pytest.raises(eos.StateError) as info:
        run_until(setup.app(), lambda app: False, timeout=30)
    message = str(info.value)
    assert "counts[0]" in message
    assert "1000000000" in message
    assert path in message
    assert changelog_topic(setup.app_id, "counts") in message


_CRASH_APP = textwrap.dedent(
    """
    import logging, sys
    import eos
    from eos.testing.faults import CrashAfterKafkaCommit

    bootstrap, app_id, input_topic, output, state_dir = sys.argv[1:6]

    class Counter(eos.Processor):
        stores = [eos.Store("counts")]

        def process(self, record, ctx):
            counts = ctx.store("counts")
            n = counts.get(record.key, 0) + 1
            counts[record.key] = n
            ctx.send(output, key=record.key, value=str(n))

    logging.basicConfig(level=logging.INFO)
    eos.Application(
        application_id=app_id,
        bootstrap_servers=bootstrap,
        input_topics=[input_topic],
        processor=Counter(),
        key_serde="string",
        value_serde="string",
        state_dir=state_dir,
        commit_interval_ms=100,
        max_batch_records=50,
        faults=CrashAfterKafkaCommit(3),
    ).run()
    """
)


def test_crash_between_kafka_commit_and_local_write(setup: Setup, tmp_path: Path) -> None:
    """A SIGKILL after the Kafka commit but before the local store write is repaired by restore:
    every count is emitted exactly once.
    """
    setup.feed(600)
    script = tmp_path / "crash_app.py"
    script.write_text(_CRASH_APP)
    env = dict(os.environ)
    args = [sys.executable, str(script), setup.bootstrap, setup.app_id, setup.input]
    args += [setup.output, setup.state_dir]
    log_path = tmp_path / "crash_app.log"
    with open(log_path, "wb") as out:
        proc = subprocess.run(args, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=60)
    assert proc.returncode == -9, log_path.read_text()
    # The killed process committed its third transaction to Kafka; its local
    # stores miss it, so the restart must replay that much of the changelog.
    before = len(read_topic(setup.bootstrap, setup.output))  # one output per committed input
    assert 0 < before < 600
    second = setup.app()
    run_until(second, lambda app: app.state.processed_count + before >= 600)
    assert restored(second) > 0
    assert setup.store_contents() == setup.sent
    setup.assert_exact()


# -- the restorer on hand-written changelogs ----------------------------------


def _restore(bootstrap: str, topic: str, store: MemoryStore, stall_timeout_s: float) -> RestoreTask:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    settings = restore_consumer_settings({"bootstrap.servers": bootstrap}, "t", "t-restore")
    restorer = ChangelogRestorer(admin, settings, stall_timeout_s=stall_timeout_s)
    task = RestoreTask("s", 0, topic, store, "/nowhere")
    restorer.restore([task])
    return task


def _transactional(bootstrap: str, **extra: object) -> Producer:
    producer = Producer(
        {"bootstrap.servers": bootstrap, "transactional.id": unique_name("txn"), **extra}
    )
    producer.init_transactions(30)
    return producer


def _high_watermark(bootstrap: str, topic: str) -> int:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "hw", "isolation.level": "read_uncommitted"}
    )
    try:
        return int(consumer.get_watermark_offsets(KafkaTopicPartition(topic, 0), timeout=10)[1])
    finally:
        consumer.close()


def test_restore_ends_at_markers_and_aborted_tail(bootstrap: str) -> None:
    """A changelog ending in commit markers and an aborted transaction restores to its high
    watermark without hanging (KAFKA-10167).
    """
    topic = create_topic(bootstrap, unique_name("cl"), 1, config={"cleanup.policy": "compact"})
    producer = _transactional(bootstrap)
    for n in range(3):
        producer.begin_transaction()
        producer.produce(topic, f"{n}".encode(), b"a", 0)
        producer.produce(topic, f"{n}".encode(), b"b", 0)
        producer.commit_transaction(30)
    producer.begin_transaction()
    producer.produce(topic, b"aborted", b"a", 0)
    producer.flush(30)
    producer.abort_transaction(30)
    end = _high_watermark(bootstrap, topic)
    assert end == 11  # 6 records, 3 commit markers, 1 aborted record and its marker

    store = MemoryStore("s", 0)
    started = time.monotonic()
    task = _restore(bootstrap, topic, store, stall_timeout_s=20)
    assert time.monotonic() - started < 5
    assert (task.restored, task.position, store.changelog_offset()) == (6, end, end)
    assert dict(store.iterate()) == {b"a": b"2", b"b": b"2"}

    # From a checkpoint on a commit marker (where a clean stop leaves it): nothing to apply.
    store.write({}, 8)
    task = _restore(bootstrap, topic, store, stall_timeout_s=20)
    assert (task.restored, task.position) == (0, end)


def test_restore_waits_for_a_dead_owners_open_transaction(bootstrap: str) -> None:
    """Committed records behind another producer's open transaction are restored once the broker
    aborts it, and its records are not.
    """
    topic = create_topic(bootstrap, unique_name("cl"), 1, config={"cleanup.policy": "compact"})
    zombie = _transactional(bootstrap, **{"transaction.timeout.ms": 2000})
    zombie.begin_transaction()
    zombie.produce(topic, b"zombie", b"z", 0)
    zombie.flush(30)  # offset 0, left open: the broker aborts it after 2 s (+ its check interval)
    owner = _transactional(bootstrap)
    owner.begin_transaction()
    owner.produce(topic, b"1", b"a", 0)
    owner.commit_transaction(30)

    store = MemoryStore("s", 0)
    task = _restore(bootstrap, topic, store, stall_timeout_s=25)
    assert dict(store.iterate()) == {b"a": b"1"}
    assert task.restored == 1
    assert task.position >= 3  # past the owner's record and its marker


def test_restore_stalled_by_open_transaction_fails_instead_of_hanging(bootstrap: str) -> None:
    """A restore that cannot progress past an open transaction raises StateError at its deadline
    rather than hanging.
    """
    topic = create_topic(bootstrap, unique_name("cl"), 1, config={"cleanup.policy": "compact"})
    owner = _transactional(bootstrap)
    owner.begin_transaction()
    owner.produce(topic, b"1", b"a", 0)
    owner.flush(30)
    try:
        started = time.monotonic()
        with pytest.raises(eos.StateError, match=r"no progress .*s\[0\] at offset 0 of 1"):
            _restore(bootstrap, topic, MemoryStore("s", 0), stall_timeout_s=2)
        assert time.monotonic() - started < 10
    finally:
        owner.abort_transaction(30)


# -- changelog topic checks at start ------------------------------------------


def _run_expecting(app: eos.Application, error: type[Exception]) -> str:
    with pytest.raises(error) as info:
        run_until(app, lambda _app: False, timeout=30)
    return str(info.value)


def test_changelog_with_wrong_partition_count_is_refused(setup: Setup) -> None:
    """An existing changelog whose partition count differs from the input's stops the start with
    a StateError naming the topic, both counts and the fix.
    """
    topic = changelog_topic(setup.app_id, "counts")
    create_topic(setup.bootstrap, topic, PARTITIONS + 1, config={"cleanup.policy": "compact"})
    message = _run_expecting(setup.app(), eos.StateError)
    assert topic in message
    assert f"has {PARTITIONS + 1} partition(s)" in message
    assert f"input topics have {PARTITIONS}" in message
    assert "delete" in message


def test_inputs_with_different_partition_counts_are_refused(setup: Setup) -> None:
    """Input topics with different partition counts cannot share store partitions: ConfigError."""
    other = create_topic(setup.bootstrap, unique_name("in"), PARTITIONS + 1)
    app = eos.Application(
        application_id=setup.app_id,
        bootstrap_servers=setup.bootstrap,
        input_topics=[setup.input, other],
        processor=make_counter(setup.output, "memory"),
        state_dir=setup.state_dir,
    )
    message = _run_expecting(app, eos.ConfigError)
    assert setup.input in message and other in message


def test_changelog_topic_is_created_compacted_and_co_partitioned(setup: Setup) -> None:
    """A missing changelog topic is created compacted with the input's partition count."""
    setup.feed(20)
    run_until(setup.app(), processed(20))
    topic = changelog_topic(setup.app_id, "counts")
    admin = AdminClient({"bootstrap.servers": setup.bootstrap})
    assert len(admin.list_topics(topic, timeout=10).topics[topic].partitions) == PARTITIONS
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    configs = admin.describe_configs([resource])[resource].result(10)
    assert configs["cleanup.policy"].value == "compact"
