"""Shared fixtures: a real Kafka (one node per session, three nodes for fault tests),
and a real PostgreSQL (``postgres``, ``postgres_dsn``: one server per session, started
on first use).

Set ``EOS_BOOTSTRAP_SERVERS`` to run against a cluster you started yourself
(for example ``docker compose -f docker-compose.test.yml up -d``); fault tests
that kill nodes are skipped then.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator

import pytest

from eos.testing.helpers import create_topic, unique_name
from eos.testing.kafka import ExternalCluster, KafkaCluster, start_kafka
from eos.testing.postgres import postgres, postgres_dsn  # noqa: F401 - fixtures

log = logging.getLogger("tests")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep tests together where they share a broker they change (pytest-xdist's
    ``--dist loadgroup``, which scripts/test.sh runs with two workers).

    The tests of the 3-node cluster share one worker: one cluster is started, and its
    node faults never overlap another test on it. A module whose fixture is
    module-scoped (the security cluster, one PostgreSQL server) runs on one worker,
    so that fixture starts once. Everything else is spread over the workers.
    """
    for item in items:
        if "kafka_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("cluster"))
            continue
        info = getattr(item, "_fixtureinfo", None)
        module = getattr(item, "module", None)
        defs = info.name2fixturedefs if info is not None else {}
        if module is not None and any(d and d[-1].scope == "module" for d in defs.values()):
            item.add_marker(pytest.mark.xdist_group(module.__name__))


@pytest.fixture(scope="session")
def kafka() -> Iterator[KafkaCluster | ExternalCluster]:
    """A single-node real Kafka (KRaft) for the whole session."""
    cluster = start_kafka(1)
    log.info("kafka ready at %s in %.1fs", cluster.bootstrap_servers, cluster.ready_seconds or 0)
    yield cluster
    cluster.discard()  # its data is thrown away: no clean shutdown of every test topic


@pytest.fixture(scope="session")
def kafka_cluster() -> Iterator[KafkaCluster]:
    """A 3-node KRaft cluster (3 voters, each a broker) for fault tests."""
    if os.environ.get("EOS_BOOTSTRAP_SERVERS"):
        pytest.skip("node faults need the project's own cluster (EOS_BOOTSTRAP_SERVERS is set)")
    cluster = KafkaCluster(3).start()
    yield cluster
    cluster.discard()


@pytest.fixture
def bootstrap(kafka: KafkaCluster | ExternalCluster) -> str:
    """Bootstrap servers of the session broker."""
    return kafka.bootstrap_servers


@pytest.fixture
def new_topic(bootstrap: str) -> Callable[..., str]:
    """``new_topic(prefix, partitions=1, **config)`` creates a uniquely named topic."""

    def make(prefix: str = "t", partitions: int = 1, **config: str) -> str:
        return create_topic(bootstrap, unique_name(prefix), partitions, 1, config)

    return make
