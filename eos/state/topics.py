"""Changelog topics: their names, and checking or creating them at start.

Each store has one changelog topic, ``<application_id>-<store>-changelog``,
compacted, with as many partitions as the input topics: store partition ``p``
writes to and restores from changelog partition ``p``. Like the engine, this
module talks to Kafka through ``confluent_kafka``'s admin client.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # not in its __all__
    AdminClient,
    ConfigResource,
    NewTopic,
)

from eos.errors import ConfigError, StateError

__all__ = ["changelog_topic", "ensure_changelog_topics"]

log = logging.getLogger("eos.state")

_MAX_REPLICATION = 3
_ADMIN_TIMEOUT_S = 30.0


def changelog_topic(application_id: str, store: str) -> str:
    """Return the changelog topic name of ``store``: ``<application_id>-<store>-changelog``."""
    return f"{application_id}-{store}-changelog"


def ensure_changelog_topics(
    admin: AdminClient,
    *,
    application_id: str,
    input_topics: Sequence[str],
    stores: Sequence[str],
    tables: Mapping[str, str] | None = None,
    timeout: float = _ADMIN_TIMEOUT_S,
) -> int:
    """Check or create the changelog topic of every store; return the partition count.

    A missing changelog is created compacted, with the input topics' partition
    count and a replication factor of ``min(3, brokers)``. ``tables`` maps the
    source topic of each table to its store (named in the error when the
    partition counts differ; a table has no changelog topic).

    Raises:
        ConfigError: The input topics differ in partition count (store
            partition ``p`` serves input partition ``p`` of every input topic),
            or a topic cannot be created.
        StateError: An existing changelog has a different partition count.
    """
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise ConfigError(
            f"cannot list topics to check changelogs: {exc}", "bootstrap.servers"
        ) from exc
    counts: dict[str, int] = {}
    for topic in input_topics:
        meta = metadata.topics.get(topic)
        if meta is None or meta.error is not None:
            raise ConfigError(f"input topic {topic!r} does not exist", "input.topics")
        counts[topic] = len(meta.partitions)
    if len(set(counts.values())) != 1:
        listing = ", ".join(f"{t}={n}" for t, n in counts.items())
        internal = f"{application_id}-"
        for topic, n in counts.items():
            if topic.startswith(internal) and topic.endswith("-repartition"):
                elsewhere = sorted({c for t, c in counts.items() if t != topic})
                raise ConfigError(
                    f"repartition topic {topic!r} has {n} partition(s) but the other input "
                    f"topics have {elsewhere}: an application with state stores needs one "
                    "partition count on all its input topics, its repartition topics included "
                    "(a store does not have a partition count of its own yet). Leave "
                    "partitions= out of group_by()/repartition() to use the input topics' "
                    f"count, or delete {topic!r} if it was created with another ({listing})",
                    "input.topics",
                )
        for topic, store in (tables or {}).items():
            others = [t for t in counts if t != topic and counts[t] != counts[topic]]
            if others:
                raise ConfigError(
                    f"table {store!r} reads topic {topic!r} with {counts[topic]} partition(s) "
                    f"but topic {others[0]!r} has {counts[others[0]]}: a table and the streams "
                    "joined with it must be co-partitioned (the same partition count and the "
                    "same keys), so that partition p of both is processed by one instance. "
                    f"Give {topic!r} and {others[0]!r} the same partition count, or use a "
                    f"global table for {topic!r} ({listing})",
                    "input.topics",
                )
        raise ConfigError(
            f"input topics have different partition counts ({listing}); an application "
            "with state stores needs co-partitioned inputs (store partition p serves input "
            "partition p of every topic): give them the same partition count",
            "input.topics",
        )
    partitions = next(iter(counts.values()))
    replication = min(_MAX_REPLICATION, max(1, len(metadata.brokers)))
    missing: list[str] = []
    existing: list[str] = []
    for store in stores:
        topic = changelog_topic(application_id, store)
        meta = metadata.topics.get(topic)
        if meta is None or meta.error is not None:
            missing.append(topic)
        else:
            _check_partitions(topic, len(meta.partitions), partitions)
            existing.append(topic)
    if missing:
        _create(admin, missing, partitions, replication, timeout)
    if existing:
        _warn_if_not_compacted(admin, existing, timeout)
    return partitions


def _check_partitions(topic: str, actual: int, expected: int) -> None:
    if actual != expected:
        raise StateError(
            f"changelog topic {topic!r} has {actual} partition(s) but the input topics have "
            f"{expected}: store partitions must match input partitions. If the input topics "
            f"were repartitioned, stop every instance, delete {topic!r} and the local state "
            "directories of this store, and start again (the state is rebuilt from scratch); "
            f"otherwise recreate {topic!r} with {expected} partition(s)"
        )


def _create(
    admin: AdminClient, topics: list[str], partitions: int, replication: int, timeout: float
) -> None:
    new = [
        NewTopic(t, partitions, replication, config={"cleanup.policy": "compact"}) for t in topics
    ]
    raced: list[str] = []
    for topic, future in admin.create_topics(new, operation_timeout=timeout).items():
        try:
            future.result()
        except KafkaException as exc:
            if exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
                raced.append(topic)  # another instance created it first
                continue
            raise ConfigError(f"cannot create changelog topic {topic!r}: {exc}", "state") from exc
        log.info(
            "created changelog topic %s (%d partitions, replication %d, compacted)",
            topic,
            partitions,
            replication,
        )
    if raced:
        # Another instance created them a moment ago: wait until the metadata shows them.
        deadline = time.monotonic() + timeout
        while True:
            metadata = admin.list_topics(timeout=timeout)
            known = [t for t in raced if t in metadata.topics and metadata.topics[t].partitions]
            if len(known) == len(raced) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        for topic in raced:
            meta = metadata.topics.get(topic)
            if meta is None:
                raise ConfigError(
                    f"changelog topic {topic!r} exists (its creation raced another instance) "
                    f"but is not in the cluster's metadata after {timeout:.0f}s",
                    "state",
                )
            _check_partitions(topic, len(meta.partitions), partitions)


def _warn_if_not_compacted(admin: AdminClient, topics: list[str], timeout: float) -> None:
    resources = [ConfigResource(ConfigResource.Type.TOPIC, t) for t in topics]
    try:
        futures = admin.describe_configs(resources, request_timeout=timeout)
        for resource, future in futures.items():
            entry = future.result().get("cleanup.policy")
            policy = "" if entry is None else str(entry.value)
            if "compact" not in policy:
                log.warning(
                    "changelog topic %s has cleanup.policy=%s, not compact: old state may be "
                    "deleted by retention and restore will then fail; set cleanup.policy=compact",
                    resource.name,
                    policy or "?",
                )
    except KafkaException as exc:  # only a warning is at stake
        log.warning("cannot check cleanup.policy of the changelog topics: %s", exc)
