"""The test broker is a real Kafka: it hides aborted records and fences zombies."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, ConfigResource  # type: ignore[attr-defined]

from eos.testing.helpers import create_topic, read_topic, unique_name, watermarks

pytestmark = pytest.mark.integration


def _txn_producer(bootstrap: str, txn_id: str) -> Producer:
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": txn_id})
    producer.init_transactions(30)
    return producer


def test_read_committed_hides_aborted_and_markers_take_offsets(bootstrap, new_topic) -> None:
    """Committed-aborted-committed batches: read_committed sees only the committed ones,
    read_uncommitted sees all three, and commit/abort markers occupy offsets."""
    topic = new_topic("real")
    producer = _txn_producer(bootstrap, f"{topic}-txn")
    for batch, commit in (("a", True), ("b", False), ("c", True)):
        producer.begin_transaction()
        for i in range(3):
            producer.produce(topic, f"{batch}{i}".encode(), b"k")
        if commit:
            producer.commit_transaction()
        else:
            producer.flush(10)  # make the broker hold them: abort would purge unsent ones
            producer.abort_transaction()

    committed = read_topic(bootstrap, topic)
    uncommitted = read_topic(bootstrap, topic, isolation_level="read_uncommitted")

    assert [r.value for r in committed] == [b"a0", b"a1", b"a2", b"c0", b"c1", b"c2"]
    assert sorted(r.value for r in uncommitted) == sorted(
        [b"a0", b"a1", b"a2", b"b0", b"b1", b"b2", b"c0", b"c1", b"c2"]
    )
    # 9 data records + 3 markers (commit, abort, commit) = 12 offsets.
    assert [r.offset for r in uncommitted] == [0, 1, 2, 4, 5, 6, 8, 9, 10]
    assert [r.offset for r in committed] == [0, 1, 2, 8, 9, 10]
    assert watermarks(bootstrap, topic)[0][1] == 12


def test_second_producer_with_same_transactional_id_fences_the_first(bootstrap, new_topic) -> None:
    """init_transactions() by a new incarnation fences the old one: its commit fails
    fatally and its open records never become visible to read_committed."""
    topic = new_topic("fence")
    txn_id = f"{topic}-txn"
    zombie = _txn_producer(bootstrap, txn_id)
    zombie.begin_transaction()
    zombie.produce(topic, b"zombie", b"k")
    zombie.flush(10)

    successor = _txn_producer(bootstrap, txn_id)  # aborts the zombie's open transaction
    successor.begin_transaction()
    successor.produce(topic, b"successor", b"k")
    successor.commit_transaction()

    with pytest.raises(KafkaException) as excinfo:
        zombie.commit_transaction()
    error = excinfo.value.args[0]
    assert error.fatal() or error.txn_requires_abort()
    assert error.fatal(), f"expected a fatal fencing error, got {error}"

    values = [r.value for r in read_topic(bootstrap, topic)]
    assert values == [b"successor"]
    assert b"zombie" in [
        r.value for r in read_topic(bootstrap, topic, isolation_level="read_uncommitted")
    ]


def test_test_topics_keep_records_whatever_their_timestamps(bootstrap) -> None:
    """Tests produce fixed past timestamps; with the broker's default seven days of time
    retention its next check (every five minutes) deletes them before they are read.
    ``create_topic`` turns time retention off unless the caller sets it."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    kept = create_topic(bootstrap, unique_name("kept"))
    own = create_topic(bootstrap, unique_name("own"), config={"retention.ms": "3600000"})
    resources = [ConfigResource(ConfigResource.Type.TOPIC, t) for t in (kept, own)]
    found = {
        resource.name: future.result(30)["retention.ms"].value
        for resource, future in admin.describe_configs(resources).items()
    }
    assert found == {kept: "-1", own: "3600000"}
