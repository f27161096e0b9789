"""Abortable commit failures are handled in-process: abort, rewind, reprocess, no loss."""

from __future__ import annotations

import pytest
from apprunner import AppThread, Upper, wait_committed

import eos
from eos.testing.faults import FailCommits
from eos.testing.helpers import committed_offsets, create_topic, produce, read_topic, unique_name
from eos.testing.verify import verify_exactly_once

pytestmark = pytest.mark.integration

RECORDS = 3_000


def test_injected_abortable_commits_are_rewound_and_redone(bootstrap, app_threads) -> None:
    """Commit attempts 3 and 5 fail abortably after send_offsets: the same running engine
    aborts twice, rewinds and reprocesses, and the output holds every input exactly once."""
    source = create_topic(bootstrap, unique_name("in"), 3)
    sink = create_topic(bootstrap, unique_name("out"), 3)
    app_id = unique_name("rewind")
    produce(bootstrap, source, ((f"k{i % 97}", f"v{i:06d}") for i in range(RECORDS)))
    app = eos.Application(
        application_id=app_id,
        bootstrap_servers=bootstrap,
        input_topics=[source],
        processor=Upper(sink),
        max_batch_records=300,  # ~10 transactions, so attempts 3 and 5 fall mid-stream
        faults=FailCommits(3, 5),
    )
    runner = AppThread(app).start()
    app_threads.append(runner)
    wait_committed(bootstrap, app_id, source, thread=runner)
    assert runner.thread.is_alive(), "the app must survive the injected failures"
    runner.stop()

    inputs = read_topic(bootstrap, source)
    outputs = read_topic(bootstrap, sink)
    uncommitted = read_topic(bootstrap, sink, isolation_level="read_uncommitted")
    verdict = verify_exactly_once(inputs, outputs, bytes.upper)
    state = app.state
    print(
        f"records={RECORDS} {verdict} read_uncommitted={len(uncommitted)} "
        f"processed={state.processed_count} commits={state.commit_count} "
        f"aborts={state.abort_count} runs={runner.runs}"
    )
    assert verdict.inputs == RECORDS
    assert verdict.ok, verdict
    assert state.abort_count == 2
    assert state.processed_count == RECORDS
    assert runner.runs == 1, "run() was called once: the engine recovered without a restart"
    ends = {p: sum(1 for r in inputs if r.partition == p) for p in range(3)}
    assert committed_offsets(bootstrap, app_id, source) == ends
