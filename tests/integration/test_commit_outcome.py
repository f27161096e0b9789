"""A commit reported as failed that went through on the broker is not redone.

librdkafka can raise a fatal error from a commit that succeeded on the broker ("commit
succeeded on the broker but the transaction had already failed locally"; an abort after
such a commit fails fatally too). The engine renews the producer and must then learn
the outcome from the group's committed offsets: redoing the batch would write its
outputs twice. ``MisreportCommits`` makes chosen commits go through and then fail.
"""

from __future__ import annotations

from collections import defaultdict

import pytest
from apprunner import AppThread, Count, Upper, wait_committed

import eos
from eos.testing.faults import MisreportCommits
from eos.testing.helpers import committed_offsets, create_topic, produce, read_topic, unique_name
from eos.testing.verify import verify_exactly_once

pytestmark = pytest.mark.integration

RECORDS = 3_000
KEYS = 97


def _run(bootstrap: str, app_threads: list[AppThread], processor: eos.Processor, **kw: object):
    source = create_topic(bootstrap, unique_name("in"), 3)
    app_id = unique_name("outcome")
    produce(bootstrap, source, ((f"k{i % KEYS}", f"v{i:06d}") for i in range(RECORDS)))
    faults = MisreportCommits(3, 5)
    app = eos.Application(
        application_id=app_id,
        bootstrap_servers=bootstrap,
        input_topics=[source],
        processor=processor,
        max_batch_records=300,  # ~10 transactions, so attempts 3 and 5 fall mid-stream
        faults=faults,
        **kw,  # type: ignore[arg-type]
    )
    runner = AppThread(app).start()
    app_threads.append(runner)
    wait_committed(bootstrap, app_id, source, thread=runner, timeout=120)
    assert runner.thread.is_alive(), "the app must survive the misreported commits"
    runner.stop()
    assert faults.misreported == 2
    assert runner.runs == 1, "run() was called once: the engine recovered in process"
    inputs = read_topic(bootstrap, source)
    ends = {p: sum(1 for r in inputs if r.partition == p) for p in range(3)}
    assert committed_offsets(bootstrap, app_id, source) == ends
    return inputs, app


def test_a_misreported_commit_is_not_redone(bootstrap, app_threads, caplog) -> None:
    """Commits 3 and 5 go through and then fail fatally: the engine renews its producer,
    finds from the group's offsets that they committed, resumes after them, and the
    output holds every input exactly once (redoing them would have written them twice)."""
    sink = create_topic(bootstrap, unique_name("out"), 3)
    caplog.set_level("WARNING", logger="eos.engine")
    inputs, app = _run(bootstrap, app_threads, Upper(sink))
    verdict = verify_exactly_once(inputs, read_topic(bootstrap, sink), bytes.upper)
    print(f"records={RECORDS} {verdict} aborts={app.state.abort_count}")
    assert verdict.ok, verdict
    settled = [r.getMessage() for r in caplog.records if "had committed" in r.getMessage()]
    assert len(settled) == 2, settled


def test_a_misreported_commit_keeps_the_stores_exact(bootstrap, app_threads, tmp_path) -> None:
    """The same with a RocksDB count per key: the batch's store writes, dropped when the
    commit was reported failed, are restored from the changelog (which holds them), so
    every key's counts are emitted exactly 1..N in order."""
    sink = create_topic(bootstrap, unique_name("out"), 3)
    inputs, _app = _run(
        bootstrap,
        app_threads,
        Count(sink),
        state_dir=str(tmp_path / "state"),
        key_serde="string",
        value_serde="string",
    )
    emitted: dict[bytes | None, list[int]] = defaultdict(list)
    for record in read_topic(bootstrap, sink):
        emitted[record.key].append(int(record.value or b"0"))
    truth: dict[bytes | None, int] = defaultdict(int)
    for record in inputs:
        truth[record.key] += 1
    wrong = {k: v[:5] for k, v in emitted.items() if v != list(range(1, truth[k] + 1))}
    assert set(emitted) == set(truth)
    assert not wrong, wrong
