"""The secured launcher's pure parts: ACLs an application needs, user secrets kept out of
reprs, the transaction coordinator's partition, the active controller read from Raft logs."""

from __future__ import annotations

from pathlib import Path

from confluent_kafka.admin import AclOperation, ResourcePatternType, ResourceType

from eos.testing.kafka import _RAFT_LEADER, KafkaCluster, KafkaNode, _java_abs, _java_hash
from eos.testing.security import ClusterSecurity, SaslUser, application_acls


def test_application_acls_are_exactly_the_documented_set() -> None:
    """READ inputs and the group; WRITE outputs and the dead-letter topic; READ, WRITE and
    DESCRIBE_CONFIGS on the changelog prefix; WRITE and DESCRIBE on the transactional-id
    prefix; CREATE on the changelog prefix and the dead-letter topic."""
    acls = application_acls(
        "User:app",
        application_id="orders",
        input_topics=["in"],
        output_topics=["out"],
        dead_letter_topic="dlq",
    )
    got = {(a.restype, a.name, a.resource_pattern_type, a.operation) for a in acls}
    lit, pre = ResourcePatternType.LITERAL, ResourcePatternType.PREFIXED
    topic, group, tid = ResourceType.TOPIC, ResourceType.GROUP, ResourceType.TRANSACTIONAL_ID
    assert got == {
        (topic, "in", lit, AclOperation.READ),
        (group, "orders", lit, AclOperation.READ),
        (topic, "out", lit, AclOperation.WRITE),
        (topic, "dlq", lit, AclOperation.WRITE),
        (topic, "orders-", pre, AclOperation.READ),
        (topic, "orders-", pre, AclOperation.WRITE),
        (topic, "orders-", pre, AclOperation.DESCRIBE_CONFIGS),
        (tid, "orders-", pre, AclOperation.WRITE),
        (tid, "orders-", pre, AclOperation.DESCRIBE),
        (topic, "orders-", pre, AclOperation.CREATE),
        (topic, "dlq", lit, AclOperation.CREATE),
    }
    assert all(a.principal == "User:app" for a in acls)


def test_passwords_stay_out_of_reprs() -> None:
    security = ClusterSecurity(users=(SaslUser("app", "pa55-app"),))
    text = repr(security) + repr(security.user("app")) + repr(security.admin)
    assert "pa55-app" not in text and security.admin.password not in text
    settings = security.client_settings("app", tls=False)
    assert settings["sasl.password"] == "pa55-app"  # handed to the client, on purpose


def test_transaction_coordinator_partition_follows_java_string_hash() -> None:
    """abs(String.hashCode()) % partitions, as the broker computes it."""
    assert _java_hash("") == 0
    assert _java_hash("a") == 97
    assert _java_hash("hello") == 99162322
    assert _java_hash("Aa") == _java_hash("BB") == 2112
    assert _java_hash("polygenelubricants") == -(2**31)  # Integer.MIN_VALUE
    assert _java_abs(-(2**31)) == 0 and _java_abs(-5) == 5


def test_active_controller_is_read_from_the_raft_logs(tmp_path: Path) -> None:
    """The node that logged becoming Raft leader at the highest epoch is the controller."""
    line = (
        "[2026-01-01 00:00:00,000] INFO [RaftManager id={id}] Completed transition to "
        "Leader(localVoterNode=VoterNode(voterKey=ReplicaKey(id={id}, directoryId=x), "
        "listeners=Endpoints(endpoints={{}})), epoch={epoch}, epochStartOffset=0, "
        "highWatermark=Optional.empty) from CandidateState(localId={id}, epoch={epoch})\n"
    )
    cluster = KafkaCluster(3, directory=tmp_path)
    for node_id, epochs in ((1, [1, 4]), (2, [2]), (3, [3])):
        directory = tmp_path / f"node-{node_id}"
        directory.mkdir()
        (directory / "server.log").write_text(
            "".join(line.format(id=node_id, epoch=e) for e in epochs)
        )
        node = KafkaNode(node_id, 0, 0, directory, "", "java", 64)
        node.pid = __import__("os").getpid()  # "running"
        cluster.nodes.append(node)
    assert [m["leader"] for m in _RAFT_LEADER.finditer(line.format(id=7, epoch=9))] == ["7"]
    assert cluster.active_controller(timeout=1).node_id == 1
