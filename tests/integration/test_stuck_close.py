"""A client close that never returns does not keep a stopped instance from exiting.

librdkafka can block in a consumer's close after a broker bounce (its coordinator
query retried forever); the transaction matrix once saw an instance that did not
exit on SIGTERM. By the time the clients close the transaction is committed, so the
engine waits for each close only up to what is left of ``shutdown_timeout_s`` (at
least a few seconds) and goes on.
"""

from __future__ import annotations

import pytest
from apprunner import AppThread, Upper, application, wait_committed

from eos.testing.faults import HangingClose
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
