"""The local Kafka launcher's pure parts: settings, errors when Java or Maven is missing."""

from __future__ import annotations

from pathlib import Path

import pytest

from eos.testing import kafka
from eos.testing.kafka import KafkaNode, KafkaSetupError


def _node(tmp_path: Path, node_id: int = 1) -> KafkaNode:
    return KafkaNode(node_id, 9092, 9093, tmp_path, "cp", "java", 256)


@pytest.mark.parametrize(("nodes", "rf", "min_isr"), [(1, "1", "1"), (3, "3", "2")])
def test_broker_settings_match_the_node_count(
    tmp_path: Path, nodes: int, rf: str, min_isr: str
) -> None:
    """Internal topics' replication and min ISR follow the node count; transactions-friendly
    defaults (no auto topic creation, no initial rebalance delay) are set."""
    text = kafka._server_properties(_node(tmp_path), "1@127.0.0.1:9093", nodes, {})
    props = dict(line.split("=", 1) for line in text.splitlines())
    assert props["transaction.state.log.replication.factor"] == rf
    assert props["offsets.topic.replication.factor"] == rf
    assert props["transaction.state.log.min.isr"] == min_isr
    assert props["auto.create.topics.enable"] == "false"
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["process.roles"] == "broker,controller"


def test_missing_java_names_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without java on PATH the error says to install Java 17+ or use docker-compose."""
    monkeypatch.setattr(kafka.shutil, "which", lambda *_a, **_k: None)
    with pytest.raises(KafkaSetupError) as info:
        kafka._require_java()
    message = str(info.value)
    assert "Java 17" in message and "docker-compose.test.yml" in message


def test_missing_maven_names_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without mvn and without cached jars the error says to install Maven or use Docker."""
    monkeypatch.setenv("EOS_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(kafka.shutil, "which", lambda *_a, **_k: None)
    with pytest.raises(KafkaSetupError, match="Maven"):
        kafka.resolve_kafka()


def test_external_cluster_starts_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """With EOS_BOOTSTRAP_SERVERS set, start_kafka returns that address and starts nothing."""
    monkeypatch.setenv("EOS_BOOTSTRAP_SERVERS", "broker-a:9092")
    cluster = kafka.start_kafka(3)
    assert isinstance(cluster, kafka.ExternalCluster)
    assert cluster.bootstrap_servers == "broker-a:9092" and cluster.nodes == []


def test_cluster_id_is_a_kafka_uuid() -> None:
    """The generated cluster id has Kafka's Uuid text form (22 URL-safe base64 chars)."""
    cid = kafka._random_cluster_id()
    assert len(cid) == 22 and all(c.isalnum() or c in "-_" for c in cid)


def test_cluster_id_never_starts_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    """kafka-storage format -t -abc... reads the id as an option: Kafka's own Uuid never
    starts with "-", and neither does ours (the first random bytes here would)."""
    import uuid

    dash_first = uuid.UUID(bytes=b"\xf8" + bytes(15))  # base64 "-A..."
    plain = uuid.UUID(bytes=b"\x00" * 16)
    draws = iter([dash_first, plain])
    monkeypatch.setattr(kafka.uuid, "uuid4", lambda: next(draws))
    assert kafka._random_cluster_id() == "AAAAAAAAAAAAAAAAAAAAAA"
