"""A record the processor cannot handle follows processing_error_policy, and nothing
of a failed or aborted transaction is ever visible to read_committed readers."""

from __future__ import annotations

import pytest
from apprunner import AppThread, Upper, application, not_poison, wait_committed

import eos
from eos.testing.faults import FailCommits
from eos.testing.helpers import (
    ReadRecord,
    committed_offsets,
    create_topic,
    produce,
    read_topic,
    unique_name,
)
from eos.testing.verify import verify_exactly_once

pytestmark = pytest.mark.integration


class Fixed(Upper):  # type: ignore[misc, valid-type]
    """The repaired processor: upper-cases poison records too."""

    def process(self, record: eos.Record, ctx: eos.Context) -> None:
        ctx.send(self.output, record.value.upper(), key=record.key)


class SendThenFail(Upper):  # type: ignore[misc, valid-type]
    """Sends a partial output for a poison record, then raises."""

    def process(self, record: eos.Record, ctx: eos.Context) -> None:
        if record.value.startswith(b"poison"):
            ctx.send(self.output, b"PARTIAL-" + record.value, key=record.key)
            raise ValueError(f"failed after sending, offset {record.offset}")
        ctx.send(self.output, record.value.upper(), key=record.key)


def test_fail_policy_raises_hides_the_batch_and_a_fixed_restart_is_exactly_once(
    bootstrap, app_threads
) -> None:
    """Under `fail` a poison record makes run() raise ProcessingError naming its position,
    only transactions committed before it are visible, and a restart with a fixed processor
    outputs every input exactly once."""
    source = create_topic(bootstrap, unique_name("in"), 1)
    sink = create_topic(bootstrap, unique_name("out"), 1)
    app_id = unique_name("poison-fail")
    produce(bootstrap, source, [("k", f"a{i:03d}") for i in range(20)])
    runner = AppThread(application(bootstrap, app_id, source, Upper(sink))).start()
    app_threads.append(runner)
    wait_committed(bootstrap, app_id, source, thread=runner)
    # One produce call: the good records before the poison share its batch.
    batch = [("k", f"b{i:03d}") for i in range(10)] + [("k", "poison-1")]
    batch += [("k", f"c{i:03d}") for i in range(10)]
    produce(bootstrap, source, batch)
    poison_offset = 30

    error = runner.join(60)
    assert isinstance(error, eos.ProcessingError), repr(error)
    assert (error.topic, error.partition, error.offset) == (source, 0, poison_offset)
    assert f"{source}[0]@{poison_offset}" in str(error)
    assert isinstance(error.__cause__, ValueError)

    inputs = read_topic(bootstrap, source)
    committed = committed_offsets(bootstrap, app_id, source)[0]
    visible = read_topic(bootstrap, sink)
    uncommitted = read_topic(bootstrap, sink, isolation_level="read_uncommitted")
    print(
        f"poison at {poison_offset}: committed offset={committed} visible={len(visible)} "
        f"read_uncommitted={len(uncommitted)} aborts={runner.app.state.abort_count}"
    )
    assert committed <= poison_offset
    assert [r.value for r in visible] == [r.value.upper() for r in inputs[:committed]]

    fixed = AppThread(application(bootstrap, app_id, source, Fixed(sink))).start()
    app_threads.append(fixed)
    wait_committed(bootstrap, app_id, source, thread=fixed)
    fixed.stop()
    verdict = verify_exactly_once(inputs, read_topic(bootstrap, sink), bytes.upper)
    print(f"after fixed restart: {verdict}")
    assert verdict.inputs == 41
    assert verdict.ok, verdict


def test_failed_run_leaves_state_failed(bootstrap, app_threads) -> None:
    """After run() raised ProcessingError, app.state.state says 'failed'."""
    source = create_topic(bootstrap, unique_name("in"), 1)
    sink = create_topic(bootstrap, unique_name("out"), 1)
    produce(bootstrap, source, [("k", "poison-0")])
    runner = AppThread(application(bootstrap, unique_name("state"), source, Upper(sink))).start()
    app_threads.append(runner)
    assert isinstance(runner.join(60), eos.ProcessingError)
    print(f"state after a failed run: {runner.app.state.state!r}")
    assert runner.app.state.state == "failed"


def test_skip_policy_counts_poison_and_passes_the_rest_exactly_once(bootstrap, app_threads) -> None:
    """Under `skip` two poison records are counted as skipped and every other input is
    output exactly once, without any abort."""
    source = create_topic(bootstrap, unique_name("in"), 3)
    sink = create_topic(bootstrap, unique_name("out"), 3)
    app_id = unique_name("poison-skip")
    records = [(f"k{i % 7}", f"v{i:04d}") for i in range(1000)]
    records[100] = ("k1", "poison-a")
    records[700] = ("k2", "poison-b")
    produce(bootstrap, source, records)
    app = application(bootstrap, app_id, source, Upper(sink), processing_error_policy="skip")
    runner = AppThread(app).start()
    app_threads.append(runner)
    wait_committed(bootstrap, app_id, source, thread=runner)
    runner.stop()

    inputs = read_topic(bootstrap, source)
    verdict = verify_exactly_once(not_poison(inputs), read_topic(bootstrap, sink), bytes.upper)
    stats = app._stats  # AppState has no skipped count; the engine stats do
    print(
        f"{verdict} skipped={stats.skipped} processed={app.state.processed_count} "
        f"aborts={app.state.abort_count}"
    )
    assert verdict.inputs == 998
    assert verdict.ok, verdict
    assert stats.skipped == 2
    assert app.state.processed_count == 1000
    assert app.state.abort_count == 0


def _check_dlq_record(record: ReadRecord, source: str, poison: ReadRecord, app_id: str) -> None:
    headers = dict(record.headers)
    assert record.key == poison.key and record.value == poison.value
    assert headers["eos.error.type"] == b"ValueError"
    assert b"offset" in headers["eos.error.message"]
    assert headers["eos.source.topic"] == source.encode()
    assert headers["eos.source.partition"] == str(poison.partition).encode()
    assert headers["eos.source.offset"] == str(poison.offset).encode()
    assert headers["eos.application.id"] == app_id.encode()


def test_dead_letter_policy_routes_poison_with_headers(bootstrap, app_threads) -> None:
    """Under `dead_letter` the poison record lands once in the dead-letter topic with its
    original key and value and the eos.* headers; all other inputs come out exactly once."""
    source = create_topic(bootstrap, unique_name("in"), 3)
    sink = create_topic(bootstrap, unique_name("out"), 3)
    dlq = unique_name("dlq")  # created by the app
    app_id = unique_name("poison-dlq")
    records = [(f"k{i % 7}", f"v{i:04d}") for i in range(1000)]
    records[500] = ("poison-key", "poison-500")
    produce(bootstrap, source, records)
    app = application(
        bootstrap,
        app_id,
        source,
        Upper(sink),
        processing_error_policy="dead_letter",
        dead_letter_topic=dlq,
    )
    runner = AppThread(app).start()
    app_threads.append(runner)
    wait_committed(bootstrap, app_id, source, thread=runner)
    runner.stop()

    inputs = read_topic(bootstrap, source)
    (poison,) = [r for r in inputs if r.value == b"poison-500"]
    verdict = verify_exactly_once(not_poison(inputs), read_topic(bootstrap, sink), bytes.upper)
    dead = read_topic(bootstrap, dlq)
    print(f"{verdict} dead_lettered={len(dead)} headers={dict(dead[0].headers) if dead else None}")
    assert verdict.ok and verdict.inputs == 999, verdict
    assert len(dead) == 1
    _check_dlq_record(dead[0], source, poison, app_id)
    assert app._stats.dead_lettered == 1


def test_partial_output_before_a_failure_is_never_visible(bootstrap, app_threads) -> None:
    """A processor that sends an output and then raises leaves no partial output visible:
    the engine aborts, replays, and dead-letters the record on the replay."""
    source = create_topic(bootstrap, unique_name("in"), 1)
    sink = create_topic(bootstrap, unique_name("out"), 1)
    dlq = unique_name("dlq")
    app_id = unique_name("partial")
    records = [("k", f"v{i:04d}") for i in range(200)]
    records[120] = ("k", "poison-120")
    produce(bootstrap, source, records)
    app = application(
        bootstrap,
        app_id,
        source,
        SendThenFail(sink),
        processing_error_policy="dead_letter",
        dead_letter_topic=dlq,
    )
    runner = AppThread(app).start()
    app_threads.append(runner)
    wait_committed(bootstrap, app_id, source, thread=runner)
    runner.stop()

    inputs = read_topic(bootstrap, source)
    outputs = read_topic(bootstrap, sink)
    uncommitted = read_topic(bootstrap, sink, isolation_level="read_uncommitted")
    verdict = verify_exactly_once(not_poison(inputs), outputs, bytes.upper)
    dead = read_topic(bootstrap, dlq)
    partial = [r for r in outputs if r.value.startswith(b"PARTIAL-")]
    print(
        f"{verdict} partial_visible={len(partial)} read_uncommitted={len(uncommitted)} "
        f"dead_lettered={len(dead)} aborts={app.state.abort_count}"
    )
    assert partial == []
    assert verdict.ok and verdict.inputs == 199, verdict
    assert len(dead) == 1
    _check_dlq_record(dead[0], source, inputs[120], app_id)
    assert app.state.abort_count >= 1


def test_dead_letter_write_of_an_aborted_transaction_is_never_visible(
    bootstrap, app_threads
) -> None:
    """When the transaction holding a dead-letter write aborts, read_committed sees the
    dead-lettered record exactly once (from the replay), never the aborted copy."""
    source = create_topic(bootstrap, unique_name("in"), 1)
    sink = create_topic(bootstrap, unique_name("out"), 1)
    dlq = unique_name("dlq")
    app_id = unique_name("dlq-abort")
    records = [("k", f"v{i:04d}") for i in range(100)]
    records[50] = ("k", "poison-50")
    produce(bootstrap, source, records)
    app = application(
        bootstrap,
        app_id,
        source,
        Upper(sink),
        processing_error_policy="dead_letter",
        dead_letter_topic=dlq,
        # All 100 records are already there: the first transaction holds them all.
        commit_interval_ms=2000,
        faults=FailCommits(1),
    )
    runner = AppThread(app).start()
    app_threads.append(runner)
    wait_committed(bootstrap, app_id, source, thread=runner)
    runner.stop()

    inputs = read_topic(bootstrap, source)
    verdict = verify_exactly_once(not_poison(inputs), read_topic(bootstrap, sink), bytes.upper)
    dead = read_topic(bootstrap, dlq)
    dead_uncommitted = read_topic(bootstrap, dlq, isolation_level="read_uncommitted")
    print(
        f"{verdict} dlq read_committed={len(dead)} read_uncommitted={len(dead_uncommitted)} "
        f"aborts={app.state.abort_count} dead_lettered_attempts={app._stats.dead_lettered}"
    )
    assert app.state.abort_count == 1
    assert verdict.ok and verdict.inputs == 99, verdict
    assert len(dead) == 1
    _check_dlq_record(dead[0], source, inputs[50], app_id)
    assert 1 <= len(dead_uncommitted) <= 2
