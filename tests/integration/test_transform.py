"""An in-process Application transforms a topic exactly once, in per-key order."""

from __future__ import annotations

import time

import pytest
from apprunner import AppThread, Upper, wait_committed

import eos
from eos.testing.helpers import create_topic, produce, read_topic, unique_name
from eos.testing.verify import verify_exactly_once

pytestmark = pytest.mark.integration

RECORDS = 10_000


def test_ten_thousand_records_exactly_once_with_counters(bootstrap, app_threads) -> None:
    """10,000 records over 3 partitions come out upper-cased exactly once in per-key
    order, and app.state counts 10,000 processed records, some commits and no abort."""
    source = create_topic(bootstrap, unique_name("in"), 3)
    sink = create_topic(bootstrap, unique_name("out"), 3)
    app_id = unique_name("transform")
    produce(bootstrap, source, ((f"k{i % 97}", f"v{i:06d}") for i in range(RECORDS)))
    app = eos.Application(
        application_id=app_id,
        bootstrap_servers=bootstrap,
        input_topics=[source],
        processor=Upper(sink),
    )
    started = time.monotonic()
    runner = AppThread(app).start()
    app_threads.append(runner)
    wait_committed(bootstrap, app_id, source, thread=runner)
    seconds = time.monotonic() - started
    runner.stop()

    verdict = verify_exactly_once(
        read_topic(bootstrap, source), read_topic(bootstrap, sink), bytes.upper
    )
    state = app.state
    print(
        f"records={RECORDS} seconds={seconds:.1f} {verdict} processed={state.processed_count} "
        f"commits={state.commit_count} aborts={state.abort_count} state={state.state}"
    )
    assert verdict.inputs == RECORDS
    assert verdict.ok, verdict
    assert state.processed_count == RECORDS
    assert state.commit_count > 0
    assert state.abort_count == 0
    assert state.state == "stopped"
