"""The 3-node cluster survives a hard-killed node and takes it back into the ISR."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from eos.testing.helpers import create_topic, read_topic, unique_name

pytestmark = [pytest.mark.integration, pytest.mark.cluster]


def _isr(admin: AdminClient, topic: str) -> list[int]:
    metadata = admin.list_topics(topic, timeout=10).topics[topic]
    return sorted(metadata.partitions[0].isrs)


def test_transactions_survive_a_killed_node_which_rejoins_the_isr(kafka_cluster) -> None:
    """With replication 3 and min.insync.replicas=2, SIGKILLing one node leaves
    transactional produce+commit working; restarted, the node rejoins the ISR."""
    bootstrap = kafka_cluster.bootstrap_servers
    topic = create_topic(bootstrap, unique_name("rf3"), 1, 3, {"min.insync.replicas": "2"})
    admin = AdminClient({"bootstrap.servers": bootstrap})
    assert _isr(admin, topic) == [1, 2, 3]

    victim = kafka_cluster.nodes[2]
    victim.kill()
    assert not victim.running

    producer = Producer(
        {"bootstrap.servers": bootstrap, "transactional.id": unique_name("txn"), "acks": "all"}
    )
    producer.init_transactions(60)
    producer.begin_transaction()
    for i in range(100):
        producer.produce(topic, f"v{i}".encode(), b"k")
    producer.commit_transaction(60)
    assert len(read_topic(bootstrap, topic)) == 100

    deadline = time.monotonic() + 60
    while victim.node_id in _isr(admin, topic) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert victim.node_id not in _isr(admin, topic), "the killed node should leave the ISR"

    victim.restart()
    deadline = time.monotonic() + 90
    while _isr(admin, topic) != [1, 2, 3] and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _isr(admin, topic) == [1, 2, 3], "the restarted node should rejoin the ISR"
