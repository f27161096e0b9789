"""A fatal consumer is replaced in process, never left running as a silent zombie; a changelog
topic created by another instance a moment ago is waited for, not a KeyError."""

from __future__ import annotations

import threading
import time

import pytest
from apprunner import AppThread, Upper, application, wait_committed
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient

from eos.state.topics import changelog_topic, ensure_changelog_topics
from eos.testing.helpers import create_topic, produce, read_topic, unique_name
from eos.testing.verify import verify_exactly_once

pytestmark = pytest.mark.integration


def test_a_fenced_static_member_rejoins_with_a_new_consumer(bootstrap, app_threads) -> None:
    """A second consumer joins with the instance's group.instance.id, so the group
    coordinator fences the instance's consumer (a fatal error, as a coordinator move in a
    broker bounce can cause by mistake). The instance aborts its batch, releases its
    partitions, joins again with a new consumer and goes on: no exit, every input exactly
    once."""
    source = create_topic(bootstrap, unique_name("in"), 2)
    sink = create_topic(bootstrap, unique_name("out"), 2)
    app_id = unique_name("renew")
    produce(bootstrap, source, ((f"k{i % 9}", f"v{i:05d}") for i in range(1000)))
    app = application(
        bootstrap, app_id, source, Upper(sink), consumer_config={"session.timeout.ms": 6000}
    )
    runner = AppThread(app).start()
    app_threads.append(runner)
    wait_committed(bootstrap, app_id, source, thread=runner)

    intruder = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": app_id,
            "group.instance.id": app.config.transactional_id,  # the instance's static id
            "session.timeout.ms": 6000,
            "log_level": 0,
        }
    )
    intruder.subscribe([source])
    deadline = time.monotonic() + 60
    while app._stats.consumer_renewals == 0:
        intruder.poll(0.2)
        assert runner.thread.is_alive(), f"the instance stopped: {runner.error!r}"
        assert time.monotonic() < deadline, "the instance's consumer was never fenced"
    intruder.close()

    produce(bootstrap, source, ((f"k{i % 9}", f"w{i:05d}") for i in range(1000)))
    wait_committed(bootstrap, app_id, source, timeout=120, thread=runner)
    runner.stop()
    verdict = verify_exactly_once(
        read_topic(bootstrap, source), read_topic(bootstrap, sink), bytes.upper
    )
    print(f"renewed after a static fence: {verdict}")
    assert verdict.ok and verdict.inputs == 2000, verdict


def test_changelog_topics_created_by_two_instances_at_once(bootstrap) -> None:
    """Two instances starting together both create the changelog topic; the one that loses
    the race waits for the topic in the metadata instead of failing."""
    source = create_topic(bootstrap, unique_name("in"), 3)
    app_id = unique_name("race")
    errors: list[BaseException] = []
    partitions: list[int] = []

    def start() -> None:
        try:
            partitions.append(
                ensure_changelog_topics(
                    AdminClient({"bootstrap.servers": bootstrap}),
                    application_id=app_id,
                    input_topics=[source],
                    stores=["a", "b", "c"],
                )
            )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == [] and partitions == [3, 3, 3, 3]
    topics = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics
    assert all(changelog_topic(app_id, s) in topics for s in "abc")
