"""Failure paths against the real broker: no partial commit on any exit, bounded aborts,
failed dead-letter and changelog writes, shutdown errors, programming errors, missing topics.

Each test reads the outputs back with a read_committed consumer and compares them with the
committed input offsets: whatever the failure, nothing of an uncommitted batch is visible
and a restart processes every input exactly once.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from apprunner import AppThread, Upper, application, not_poison, wait_committed

import eos
from eos.state.rocksdb import RocksDBStore
from eos.state.topics import changelog_topic
from eos.testing.faults import FailCommits
from eos.testing.helpers import (
    committed_offsets,
    create_topic,
    produce,
    read_topic,
    unique_name,
)
from eos.testing.verify import verify_exactly_once

pytestmark = pytest.mark.integration


def _visible_matches_committed(bootstrap: str, app_id: str, source: str, sink: str) -> int:
    """read_committed outputs are exactly the outputs of the committed inputs; returns the
    committed offset of the (single) input partition."""
    committed = committed_offsets(bootstrap, app_id, source)[0]
    inputs = read_topic(bootstrap, source)
    done = [r for r in inputs if r.offset < max(committed, 0)]
    visible = read_topic(bootstrap, sink)
    assert [r.value for r in visible] == [r.value.upper() for r in not_poison(done)], (
        f"visible={len(visible)} committed offset={committed}"
    )
    return committed


def _restart_to_the_end(
    bootstrap: str, app_id: str, source: str, sink: str, app_threads: list[AppThread], **kw
) -> None:
    """Restart with the skip policy, catch up, and check every good input exactly once."""
    app = application(bootstrap, app_id, source, Upper(sink), processing_error_policy="skip", **kw)
    runner = AppThread(app).start()
    app_threads.append(runner)
    wait_committed(bootstrap, app_id, source, thread=runner)
    runner.stop()
    verdict = verify_exactly_once(
        not_poison(read_topic(bootstrap, source)), read_topic(bootstrap, sink), bytes.upper
    )
    print(f"after restart: {verdict}")
    assert verdict.ok, verdict


# -- item 1: a failed run never commits a partial transaction ----------------------------


def test_dead_letter_copy_too_large_stops_with_nothing_partial(bootstrap, app_threads) -> None:
    """A 999,900-byte poison record in the middle of an open batch whose dead-letter copy (with
    its error headers) is over message.max.bytes: run() raises ProcessingError saying it could
    not be dead-lettered, none of the 1,000 outputs already produced in that batch is visible,
    and a restart processes every record exactly once (no duplicates from a partial commit)."""
    source = create_topic(bootstrap, unique_name("in"), 1)
    sink = create_topic(bootstrap, unique_name("out"), 1)
    dlq = unique_name("dlq")
    app_id = unique_name("dlq-too-big")
    records = [(f"k{i % 7}", f"v{i:05d}") for i in range(2000)]
    records[1000] = ("k-big", "poison" + "x" * 999_894)  # 999,900 bytes
    produce(bootstrap, source, records)
    app = application(
        bootstrap,
        app_id,
        source,
        Upper(sink),
        processing_error_policy="dead_letter",
        dead_letter_topic=dlq,
        commit_interval_ms=20_000,  # one transaction holds everything before the poison
    )
    runner = AppThread(app).start()
    app_threads.append(runner)
    error = runner.join(90)
    committed = _visible_matches_committed(bootstrap, app_id, source, sink)
    print(f"error={error!r} committed offset={committed} aborts={app.state.abort_count}")
    assert isinstance(error, eos.ProcessingError), repr(error)
    assert "could not be dead-lettered" in str(error) and "MSG_SIZE_TOO_LARGE" in str(error)
    assert error.offset == 1000
    assert committed <= 1000
    assert app.state.abort_count >= 1  # the open batch (1,000 outputs) was aborted
    assert read_topic(bootstrap, dlq) == []  # created at start, never written
    _restart_to_the_end(bootstrap, app_id, source, sink, app_threads)


class ExitAt(Upper):  # type: ignore[misc, valid-type]
    """Raises ``exc`` on the record at ``offset`` (after the batch produced outputs)."""

    def __init__(self, output: str, offset: int, exc: BaseException) -> None:
        super().__init__(output)
        self.offset = offset
        self.exc = exc

    def process(self, record: eos.Record, ctx: eos.Context) -> None:
        if record.offset == self.offset:
            raise self.exc
        super().process(record, ctx)


@pytest.mark.parametrize("exc", [SystemExit(3), KeyboardInterrupt()], ids=["SystemExit", "Ctrl-C"])
def test_exit_from_process_aborts_the_open_batch(bootstrap, app_threads, exc) -> None:
    """SystemExit or KeyboardInterrupt from process() mid-batch ends run() with that exception,
    the open transaction is aborted before the consumer closes (its outputs stay invisible),
    and a restart is exactly once."""
    source = create_topic(bootstrap, unique_name("in"), 1)
    sink = create_topic(bootstrap, unique_name("out"), 1)
    app_id = unique_name("exit")
    produce(bootstrap, source, ((f"k{i % 5}", f"v{i:05d}") for i in range(1500)))
    app = application(bootstrap, app_id, source, ExitAt(sink, 700, exc), commit_interval_ms=20_000)
    runner = AppThread(app).start()
    app_threads.append(runner)
    error = runner.join(60)
    committed = _visible_matches_committed(bootstrap, app_id, source, sink)
    reasons = dict(app._stats.abort_reasons)
    print(f"error={error!r} committed={committed} aborts={reasons}")
    assert type(error) is type(exc)
    assert committed <= 700
    assert reasons.get("run_failed") == 1  # the open batch was aborted on the way out
    assert app.state.state == "failed"
    _restart_to_the_end(bootstrap, app_id, source, sink, app_threads)


# -- item 4: failures pinned on records, and the abort limit ------------------------------


class Remember(eos.Processor):
    """Stores each record's value under its key and sends it upper-cased."""

    stores = [eos.Store("last", key_serde="string", value_serde="string")]

    def __init__(self, output: str) -> None:
        self.output = output

    def process(self, record: eos.Record, ctx: eos.Context) -> None:
        ctx.store("last")[record.key] = record.value
        ctx.send(self.output, record.value.upper(), key=record.key)


def test_changelog_record_over_its_topic_limit_is_blamed_on_its_record(
    bootstrap, app_threads, tmp_path: Path
) -> None:
    """A store write whose changelog record the broker rejects (over the changelog topic's
    max.message.bytes) is pinned on the input record that made it: that record is
    dead-lettered with its output and store write dropped, every other record is exactly
    once in the output and in the changelog, after a few aborts, never a loop."""
    source = create_topic(bootstrap, unique_name("in"), 1)
    sink = create_topic(bootstrap, unique_name("out"), 1)
    dlq = unique_name("dlq")
    app_id = unique_name("changelog-big")
    create_topic(
        bootstrap,
        changelog_topic(app_id, "last"),
        1,
        config={"cleanup.policy": "compact", "max.message.bytes": "2000"},
    )
    records = [(f"k{i:03d}", f"v{i:04d}") for i in range(300)]
    records[150] = ("k-big", "B" * 3000)
    produce(bootstrap, source, records)
    app = application(
        bootstrap,
        app_id,
        source,
        Remember(sink),
        key_serde="string",
        value_serde="string",
        state_dir=str(tmp_path),
        processing_error_policy="dead_letter",
        dead_letter_topic=dlq,
        producer_config={"batch.size": 1000},
    )
    runner = AppThread(app).start()
    app_threads.append(runner)
    wait_committed(bootstrap, app_id, source, thread=runner)
    runner.stop()
    inputs = read_topic(bootstrap, source)
    good = [r for r in inputs if r.key != b"k-big"]
    verdict = verify_exactly_once(good, read_topic(bootstrap, sink), bytes.upper)
    changelog = read_topic(bootstrap, changelog_topic(app_id, "last"))
    dead = read_topic(bootstrap, dlq)
    print(f"{verdict} changelog={len(changelog)} dead={len(dead)} aborts={app.state.abort_count}")
    assert verdict.ok and verdict.inputs == 299, verdict
    assert sorted(r.key for r in changelog) == sorted(r.key for r in good)
    assert [r.key for r in dead] == [b"k-big"]
    assert 1 <= app.state.abort_count <= 4


def test_rejected_dead_letter_record_stops_with_processing_error(bootstrap, app_threads) -> None:
    """A dead-letter record the broker rejects (over the dead-letter topic's
    max.message.bytes) is attributed to its record: run() raises ProcessingError saying the
    record could not be dead-lettered, instead of replaying forever; nothing of the failed
    batch is visible, and a restart is exactly once."""
    source = create_topic(bootstrap, unique_name("in"), 1)
    sink = create_topic(bootstrap, unique_name("out"), 1)
    dlq = create_topic(bootstrap, unique_name("dlq"), 1, config={"max.message.bytes": "1500"})
    app_id = unique_name("dlq-rejected")
    records = [(f"k{i % 3}", f"v{i:04d}") for i in range(400)]
    records[200] = ("k", "poison" + "p" * 3000)
    produce(bootstrap, source, records)
    app = application(
        bootstrap,
        app_id,
        source,
        Upper(sink),
        processing_error_policy="dead_letter",
        dead_letter_topic=dlq,
        producer_config={"batch.size": 1000},
    )
    runner = AppThread(app).start()
    app_threads.append(runner)
    error = runner.join(90)
    committed = _visible_matches_committed(bootstrap, app_id, source, sink)
    print(f"error={error!r} committed={committed} aborts={app.state.abort_count}")
    assert isinstance(error, eos.ProcessingError), repr(error)
    assert "could not be dead-lettered" in str(error) and error.offset == 200
    assert committed <= 200
    assert read_topic(bootstrap, dlq) == []
    _restart_to_the_end(bootstrap, app_id, source, sink, app_threads)


def test_abort_limit_stops_with_the_cause_after_backing_off(bootstrap, app_threads) -> None:
    """A failure that no record is to blame for (every commit fails) is retried with growing
    backoff and, after max_aborts_without_progress aborts, stops the instance with
    AbortLimitError naming the cause; nothing is visible or committed."""
    source = create_topic(bootstrap, unique_name("in"), 1)
    sink = create_topic(bootstrap, unique_name("out"), 1)
    app_id = unique_name("abort-limit")
    produce(bootstrap, source, ((f"k{i}", f"v{i}") for i in range(100)))
    app = application(
        bootstrap,
        app_id,
        source,
        Upper(sink),
        max_aborts_without_progress=4,
        faults=FailCommits(*range(1, 100)),
    )
    started = time.monotonic()
    runner = AppThread(app).start()
    app_threads.append(runner)
    error = runner.join(90)
    elapsed = time.monotonic() - started
    reasons = dict(app._stats.abort_reasons)
    print(f"error={error!r} aborts={app.state.abort_count} {reasons} elapsed={elapsed:.1f}s")
    assert isinstance(error, eos.errors.AbortLimitError), repr(error)
    assert error.aborts == 4 and "injected failure" in error.cause
    assert app.state.abort_count == 4 and app.state.state == "failed"
    assert elapsed >= 0.1 + 0.2 + 0.4  # the backoff between the four attempts
    assert read_topic(bootstrap, sink) == []
    assert committed_offsets(bootstrap, app_id, source)[0] < 0


# -- item 7: at_least_once never makes transactional calls --------------------------------


def test_at_least_once_rejected_output_is_dead_lettered_not_fatal(bootstrap, app_threads) -> None:
    """Under at_least_once an output the broker rejects is pinned on its record and
    dead-lettered; the instance keeps running (no transactional call on its producer) and
    every other input is in the output at least once."""
    source = create_topic(bootstrap, unique_name("in"), 1)
    sink = create_topic(bootstrap, unique_name("out"), 1, config={"max.message.bytes": "2000"})
    dlq = unique_name("dlq")
    app_id = unique_name("alos-rejected")
    records = [(f"k{i % 4}", f"v{i:04d}") for i in range(300)]
    records[120] = ("k-big", "b" * 5000)
    produce(bootstrap, source, records)
    app = application(
        bootstrap,
        app_id,
        source,
        Upper(sink),
        processing_guarantee="at_least_once",
        processing_error_policy="dead_letter",
        dead_letter_topic=dlq,
        # The default batch.size puts the oversize record in a request with others: the
        # broker rejects them all, so the blame goes one record per request, and the
        # producer is renewed, which must not call init_transactions.
    )
    runner = AppThread(app).start()
    app_threads.append(runner)
    wait_committed(bootstrap, app_id, source, thread=runner)
    assert runner.thread.is_alive()
    runner.stop()
    inputs = [r for r in read_topic(bootstrap, source) if r.key != b"k-big"]
    outputs = {r.value for r in read_topic(bootstrap, sink)}
    dead = read_topic(bootstrap, dlq)
    missing = [r.value for r in inputs if r.value.upper() not in outputs]
    print(f"missing={len(missing)} dead={[r.key for r in dead]} aborts={app.state.abort_count}")
    assert missing == []
    assert [r.key for r in dead] == [b"k-big"]


# -- item 8: the way out never masks the error that ended the run -------------------------


class Clumsy(Remember):
    """Fails a poison record; its on_revoke and close raise too."""

    closed = False

    def process(self, record: eos.Record, ctx: eos.Context) -> None:
        if record.value.startswith("poison"):
            raise ValueError("the real failure")
        super().process(record, ctx)

    def on_revoke(self, partitions: list[eos.TopicPartition]) -> None:
        raise RuntimeError("on_revoke failed too")

    def close(self) -> None:
        type(self).closed = True
        raise RuntimeError("close failed too")


def test_shutdown_errors_never_replace_the_error_that_ended_the_run(
    bootstrap, app_threads, tmp_path: Path
) -> None:
    """When a run fails, errors from on_revoke and close() on the way out are logged, not
    raised: run() raises the ProcessingError, close() still ran, and the stores were closed
    (their RocksDB lock is free)."""
    source = create_topic(bootstrap, unique_name("in"), 1)
    sink = create_topic(bootstrap, unique_name("out"), 1)
    app_id = unique_name("clumsy")
    produce(bootstrap, source, [("k1", "a"), ("k2", "b"), ("k3", "poison"), ("k4", "d")])
    app = application(
        bootstrap,
        app_id,
        source,
        Clumsy(sink),
        key_serde="string",
        value_serde="string",
        state_dir=str(tmp_path),
    )
    runner = AppThread(app).start()
    app_threads.append(runner)
    error = runner.join(60)
    print(f"error={error!r}")
    assert isinstance(error, eos.ProcessingError), repr(error)
    assert "the real failure" in str(error)
    assert Clumsy.closed
    store = RocksDBStore(str(tmp_path / app_id / "last" / "0"), "last", 0)  # lock is free
    store.close()


# -- item 10: a programming error is not a poison record ----------------------------------


class DynamicStore(eos.Processor):
    stores = [eos.Store("a")]

    def __init__(self, output: str) -> None:
        self.output = output

    def process(self, record: eos.Record, ctx: eos.Context) -> None:
        ctx.send(self.output, record.value, key=record.key)
        ctx.store(record.value)[record.key] = 1


def test_undeclared_store_at_run_time_stops_despite_the_skip_policy(
    bootstrap, app_threads, tmp_path: Path
) -> None:
    """ctx.store() with a name known only at run time and not declared stops the instance with
    ConfigError under the skip policy, instead of skipping every record; nothing of its batch
    is visible."""
    source = create_topic(bootstrap, unique_name("in"), 1)
    sink = create_topic(bootstrap, unique_name("out"), 1)
    app_id = unique_name("dyn-store")
    produce(bootstrap, source, [("k1", "a"), ("k2", "a"), ("k3", "b"), ("k4", "a")])
    app = application(
        bootstrap,
        app_id,
        source,
        DynamicStore(sink),
        processing_error_policy="skip",
        key_serde="string",
        value_serde="string",
        state_dir=str(tmp_path),
    )
    runner = AppThread(app).start()
    app_threads.append(runner)
    error = runner.join(60)
    print(f"error={error!r} skipped={app._stats.skipped}")
    assert isinstance(error, eos.ConfigError) and "'b' is not declared" in str(error)
    assert app._stats.skipped == 0
    assert read_topic(bootstrap, sink) == []


# -- item 3: a missing output topic is a configuration error, not poison -------------------


def test_missing_output_topic_stops_naming_the_topic(bootstrap, app_threads) -> None:
    """Output to a topic that does not exist (auto-creation is off) stops the instance with a
    ConfigError naming the topic, under the skip policy too: nothing is skipped."""
    source = create_topic(bootstrap, unique_name("in"), 1)
    missing = unique_name("no-such-topic")
    app_id = unique_name("missing-out")
    produce(bootstrap, source, ((f"k{i}", f"v{i}") for i in range(50)))
    app = application(
        bootstrap,
        app_id,
        source,
        Upper(missing),
        processing_error_policy="skip",
        producer_config={"topic.metadata.propagation.max.ms": 1000},
    )
    runner = AppThread(app).start()
    app_threads.append(runner)
    error = runner.join(60)
    print(f"error={error!r} skipped={app._stats.skipped}")
    assert isinstance(error, eos.ConfigError), repr(error)
    assert missing in str(error) and "does not exist" in str(error)
    assert app._stats.skipped == 0
    assert committed_offsets(bootstrap, app_id, source)[0] < 0
