"""librdkafka calls that never return: the engine goes on, exactly-once.

The transaction matrix caught an instance blocked for minutes in
``send_offsets_to_transaction`` after the active controller was killed (librdkafka
never checks its coordinator request timeout, librdkafka#5456/#5511), so it did not
even see SIGTERM. The call now runs on a helper thread; past its timeout the producer
is replaced (the new one fences it) and the batch is redone. A client close that
blocks at shutdown is waited for only up to what is left of ``shutdown_timeout_s``.
"""

from __future__ import annotations

import pytest
from apprunner import AppThread, Upper, application, wait_committed

from eos.testing.faults import HangingClose, HangingSendOffsets
from eos.testing.helpers import create_topic, produce, read_topic, unique_name
from eos.testing.verify import verify_exactly_once

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("client", ["consumer", "producer"])
def test_a_close_that_never_returns_does_not_stop_the_exit(
    bootstrap, app_threads, client: str
) -> None:
    """The consumer's (or the producer's) close blocks forever: ``stop()`` still returns
    within shutdown_timeout_s plus the close floor, and every input is in the output
    exactly once."""
    source = create_topic(bootstrap, unique_name("in"), 2)
    sink = create_topic(bootstrap, unique_name("out"), 2)
    app_id = unique_name("stuck-close")
    produce(bootstrap, source, ((f"k{i % 11}", f"v{i:04d}") for i in range(500)))
    hang = HangingClose(client)
    app = application(bootstrap, app_id, source, Upper(sink), faults=hang, shutdown_timeout_s=2.0)
    runner = AppThread(app).start()
    app_threads.append(runner)
    try:
        wait_committed(bootstrap, app_id, source, thread=runner)
        took = runner.stop(timeout=60)
        assert hang.hung.is_set(), f"the {client} close was never reached"
        print(f"stopped in {took:.1f}s with the {client} close hung")
        assert took < 30, f"stop took {took:.1f}s"
    finally:
        hang.release()
    verdict = verify_exactly_once(
        read_topic(bootstrap, source), read_topic(bootstrap, sink), bytes.upper
    )
    assert verdict.ok, verdict


def test_a_send_offsets_that_never_returns_is_given_up_and_redone(bootstrap, app_threads) -> None:
    """The 3rd send_offsets_to_transaction blocks forever: after the transaction timeout
    (+5 s) the producer is replaced, the batch is redone, every input is in the output
    exactly once, and the run goes on to a clean stop."""
    source = create_topic(bootstrap, unique_name("in"), 2)
    sink = create_topic(bootstrap, unique_name("out"), 2)
    app_id = unique_name("stuck-offsets")
    produce(bootstrap, source, ((f"k{i % 11}", f"v{i:04d}") for i in range(300)))
    hang = HangingSendOffsets(3)
    app = application(
        bootstrap,
        app_id,
        source,
        Upper(sink),
        faults=hang,
        transaction_timeout_ms=5_000,
        max_batch_records=50,
    )
    runner = AppThread(app).start()
    app_threads.append(runner)
    try:
        assert hang.hung.wait(60), "the 3rd send_offsets_to_transaction was never reached"
        produce(bootstrap, source, ((f"k{i % 11}", f"w{i:04d}") for i in range(300)))
        wait_committed(bootstrap, app_id, source, thread=runner, timeout=120)
        assert app._stats.abort_reasons["producer_stuck"] == 1, dict(app._stats.abort_reasons)
        runner.stop(timeout=60)
    finally:
        hang.release()
    verdict = verify_exactly_once(
        read_topic(bootstrap, source), read_topic(bootstrap, sink), bytes.upper
    )
    assert verdict.ok, verdict
