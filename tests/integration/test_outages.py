"""Outages are not poison: brokers down for longer than the transaction timeout, on the
3-node cluster (replication 3), under the skip policy: nothing is skipped, lost or duplicated,
and the instance never stops with a false "fenced" error.
"""

from __future__ import annotations

import time

import pytest
from apprunner import AppThread, Upper, wait_committed

import eos
from eos.testing.helpers import create_topic, produce, read_topic, unique_name
from eos.testing.verify import verify_exactly_once

pytestmark = [pytest.mark.integration, pytest.mark.cluster]

TRANSACTION_TIMEOUT_MS = 10_000


class Paced(Upper):  # type: ignore[misc, valid-type]
    """Upper-cases, spending ``delay`` seconds per record so the run spans the outage."""

    def __init__(self, output: str, delay: float) -> None:
        super().__init__(output)
        self.delay = delay

    def process(self, record: eos.Record, ctx: eos.Context) -> None:
        time.sleep(self.delay)
        super().process(record, ctx)


def _run_through_outage(
    cluster,
    app_threads: list[AppThread],
    *,
    sink_min_insync: str,
    down: list[int],
    outage_s: float,
    producer_config: dict[str, object],
) -> tuple[eos.Application, float]:
    """Start a skip-policy pipeline over 5,000 records, take ``down`` nodes out for
    ``outage_s`` seconds in the middle of it, bring them back; return the app and the time
    the outage lasted."""
    bootstrap = cluster.bootstrap_servers
    source = create_topic(bootstrap, unique_name("in"), 3, 3, {"min.insync.replicas": "2"})
    sink = create_topic(
        bootstrap, unique_name("out"), 3, 3, {"min.insync.replicas": sink_min_insync}
    )
    app_id = unique_name("outage")
    total = 5_000
    produce(bootstrap, source, ((f"k{i % 97}", f"v{i:06d}") for i in range(total)))
    app = eos.Application(
        application_id=app_id,
        bootstrap_servers=bootstrap,
        input_topics=[source],
        processor=Paced(sink, 0.002),
        processing_error_policy="skip",
        transaction_timeout_ms=TRANSACTION_TIMEOUT_MS,
        producer_config=producer_config,
    )
    runner = AppThread(app).start()
    app_threads.append(runner)
    deadline = time.monotonic() + 120
    while app.state.processed_count < 1000:  # mid-stream when the outage starts
        assert runner.thread.is_alive(), runner.error
        assert time.monotonic() < deadline, "the pipeline did not start"
        time.sleep(0.1)
    victims = [cluster.nodes[i] for i in down]
    started = time.monotonic()
    for node in victims:
        node.kill()
    time.sleep(outage_s)  # not a synchronization: how long the outage lasts is the fault
    for node in victims:
        node.restart()
    outage = time.monotonic() - started
    wait_committed(bootstrap, app_id, source, timeout=240, thread=runner)
    runner.stop(120)
    inputs = read_topic(bootstrap, source, timeout=120)
    verdict = verify_exactly_once(inputs, read_topic(bootstrap, sink, timeout=120), bytes.upper)
    print(
        f"down={down} outage={outage:.1f}s {verdict} skipped={app._stats.skipped} "
        f"aborts={dict(app._stats.abort_reasons)} fenced={app._stats.fenced}"
    )
    assert verdict.ok and verdict.inputs == total, verdict
    assert app._stats.skipped == 0
    return app, outage


def test_two_nodes_down_longer_than_the_transaction_timeout(kafka_cluster, app_threads) -> None:
    """Two of three nodes SIGKILLed for longer than transaction.timeout.ms while a skip
    pipeline runs, then restarted: every input is in the output exactly once, nothing is
    skipped, and the instance recovers in process."""
    _app, outage = _run_through_outage(
        kafka_cluster,
        app_threads,
        sink_min_insync="2",
        down=[1, 2],
        outage_s=TRANSACTION_TIMEOUT_MS / 1000 + 5,
        producer_config={"message.timeout.ms": 3000},
    )
    assert outage > TRANSACTION_TIMEOUT_MS / 1000


@pytest.mark.parametrize(
    "message_timeout_ms", [3000, TRANSACTION_TIMEOUT_MS], ids=["short", "transaction-timeout"]
)
def test_output_outage_is_retried_never_skipped_nor_fenced(
    kafka_cluster, app_threads, message_timeout_ms: int
) -> None:
    """One node down with the output topic at min.insync.replicas=3: the transaction
    coordinator is healthy, so every output times out (_MSG_TIMED_OUT) and aborts succeed,
    for longer than transaction.timeout.ms. The timeouts are an outage, never blamed on a
    record (nothing skipped); a transaction the broker timed out (fencing the old epoch) is
    redone with a new producer in process, never a ProducerFencedError; exactly once."""
    app, outage = _run_through_outage(
        kafka_cluster,
        app_threads,
        sink_min_insync="3",
        down=[2],
        outage_s=TRANSACTION_TIMEOUT_MS / 1000 * 2.5,
        producer_config={"message.timeout.ms": message_timeout_ms},
    )
    assert outage > TRANSACTION_TIMEOUT_MS / 1000
    assert sum(app._stats.abort_reasons.values()) >= 1, "the outage hit no transaction"
    assert app._stats.fenced == 0
