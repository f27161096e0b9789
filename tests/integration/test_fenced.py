"""A second instance with the same instance_id fences the first, which stops at once."""

from __future__ import annotations

import threading
import time

import pytest
from apprunner import AppThread, Upper

import eos
from eos.errors import ProducerFencedError
from eos.testing.helpers import (
    create_topic,
    produce,
    read_topic,
    unique_name,
    wait_caught_up,
)
from eos.testing.verify import verify_exactly_once

pytestmark = pytest.mark.integration


def test_same_instance_id_fences_the_older_incarnation(bootstrap) -> None:
    """Starting a second incarnation with the same instance_id makes the first stop with
    a fatal (fenced) error without committing again; the output stays exactly once."""
    source = create_topic(bootstrap, unique_name("in"), 2)
    sink = create_topic(bootstrap, unique_name("out"), 2)
    app_id = unique_name("fence")

    def make() -> eos.Application:
        return eos.Application(
            application_id=app_id,
            bootstrap_servers=bootstrap,
            input_topics=[source],
            processor=Upper(sink),
            instance_id="same",
            # Static membership would make the broker fence the consumer too;
            # turn it off to exercise the producer fencing path alone.
            consumer_config={"group.instance.id": "", "session.timeout.ms": 6000},
        )

    stop_feeding = threading.Event()
    produced = [0]

    def feed() -> None:
        i = 0
        while not stop_feeding.is_set() and i < 4000:
            produce(bootstrap, source, ((f"k{j % 13}", f"v{j:05d}") for j in range(i, i + 200)))
            i += 200
            produced[0] = i
            time.sleep(0.1)

    feeder = threading.Thread(target=feed, daemon=True)
    first = AppThread(make()).start()
    feeder.start()
    while produced[0] < 1000:
        time.sleep(0.05)
    second = AppThread(make()).start()
    error = first.join(60)
    print(f"first incarnation ended with {type(error).__name__}: {error}")
    assert isinstance(error, ProducerFencedError), error
    assert first.app.state.state == "failed"
    feeder.join()
    wait_caught_up(bootstrap, app_id, source, timeout=90)
    second.stop()
    verdict = verify_exactly_once(
        read_topic(bootstrap, source), read_topic(bootstrap, sink), bytes.upper
    )
    print(verdict)
    assert verdict.inputs == 4000
    assert verdict.ok, verdict
