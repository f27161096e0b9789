"""A BatchProcessor gets a partition's records a run at a time and keeps every guarantee:
outputs and counts exactly once across a restart, and a failing batch's policy applied
to exactly its one failing record, whether the batch had sent output or not."""

from __future__ import annotations

from collections import defaultdict

import pytest
from apprunner import AppThread, CountBatches, application, not_poison, wait_committed

import eos
from eos.testing.helpers import create_topic, produce, read_topic, unique_name
from eos.testing.verify import verify_exactly_once

pytestmark = pytest.mark.integration


class UpperBatches(eos.BatchProcessor):
    """Upper-cases each value; a ``poison`` value raises, after the outputs of the records
    before it in the batch were sent (``validate_first``: before anything is sent)."""

    def __init__(self, output: str, *, validate_first: bool = False) -> None:
        self.output = output
        self.validate_first = validate_first
        self.sizes: list[int] = []

    def process_batch(self, batch: eos.RecordBatch, ctx: eos.Context) -> None:
        self.sizes.append(len(batch))
        if self.validate_first:
            for value in batch.values:
                if value.startswith(b"poison"):
                    raise ValueError(f"poison value {value!r}")
        for record in batch:
            if record.value.startswith(b"poison"):
                raise ValueError(f"poison at offset {record.offset}")
            ctx.send(self.output, record.value.upper(), key=record.key)


def test_batch_counts_are_exactly_once_across_a_restart(bootstrap, app_threads) -> None:
    """Counts per key come out 1, 2, ... n exactly once per key, in order, across a
    stop and a restart that restores the store; batches held more than one record."""
    source = create_topic(bootstrap, unique_name("in"), 3)
    sink = create_topic(bootstrap, unique_name("out"), 3)
    app_id = unique_name("batch-count")
    expected: dict[bytes, int] = defaultdict(int)
    runs: list[CountBatches] = []
    for prefix, n in (("v", 3000), ("w", 2000)):  # the second run restores the store
        produce(bootstrap, source, [(f"k{i % 11}", f"{prefix}{i:05d}") for i in range(n)])
        for i in range(n):
            expected[f"k{i % 11}".encode()] += 1
        processor = CountBatches(sink)
        runs.append(processor)
        app = application(bootstrap, app_id, source, processor, key_serde="string")
        runner = AppThread(app).start()
        app_threads.append(runner)
        wait_committed(bootstrap, app_id, source, thread=runner)
        runner.stop()
    first, second = runs

    per_key: dict[bytes | None, list[int]] = defaultdict(list)
    for record in read_topic(bootstrap, sink):
        per_key[record.key].append(int(record.value or b"0"))
    print(
        f"keys={len(per_key)} outputs={sum(map(len, per_key.values()))} batches="
        f"{len(first.sizes)}+{len(second.sizes)} largest={max(first.sizes + second.sizes)}"
    )
    assert {k: v for k, v in per_key.items()} == {
        k: list(range(1, n + 1)) for k, n in expected.items()
    }
    assert max(first.sizes) > 1 and max(second.sizes) > 1


@pytest.mark.parametrize("validate_first", [False, True], ids=["after-sending", "before-sending"])
def test_a_failing_batch_dead_letters_its_one_failing_record(
    bootstrap, app_threads, validate_first
) -> None:
    """A batch that raises on a poison record, after sending the outputs of the records
    before it (the transaction is aborted and the partition replayed one record at a
    time) or before sending anything (its records are redone one at a time): the poison
    record alone is dead-lettered, every other input comes out exactly once, and the
    partial output of the failed batch is never visible."""
    source = create_topic(bootstrap, unique_name("in"), 2)
    sink = create_topic(bootstrap, unique_name("out"), 2)
    dlq = unique_name("dlq")
    app_id = unique_name("batch-poison")
    records = [(f"k{i % 5}", f"v{i:04d}") for i in range(1500)]
    records[700] = ("k0", "poison-700")
    records[1300] = ("k3", "poison-1300")
    produce(bootstrap, source, records)
    processor = UpperBatches(sink, validate_first=validate_first)
    app = application(
        bootstrap,
        app_id,
        source,
        processor,
        processing_error_policy="dead_letter",
        dead_letter_topic=dlq,
    )
    runner = AppThread(app).start()
    app_threads.append(runner)
    wait_committed(bootstrap, app_id, source, thread=runner)
    runner.stop()

    inputs = read_topic(bootstrap, source)
    verdict = verify_exactly_once(not_poison(inputs), read_topic(bootstrap, sink), bytes.upper)
    dead = read_topic(bootstrap, dlq)
    print(
        f"{verdict} dead_lettered={[r.value for r in dead]} aborts={app.state.abort_count} "
        f"batches={len(processor.sizes)} largest={max(processor.sizes)}"
    )
    assert verdict.ok and verdict.inputs == 1498, verdict
    assert sorted(r.value for r in dead) == [b"poison-1300", b"poison-700"]
    assert app._stats.dead_lettered == 2
    assert max(processor.sizes) > 1
    if validate_first:
        # Nothing of the failed batch was in the transaction: no abort was needed.
        assert app.state.abort_count == 0
    else:
        assert app.state.abort_count >= 1


def test_at_least_once_a_failing_batch_skips_its_one_record_and_loses_nothing(
    bootstrap, app_threads
) -> None:
    """Under at_least_once a batch failing after sending is aborted (its undelivered
    outputs dropped) and replayed one record at a time: the poison record alone is
    skipped and every other input comes out at least once."""
    source = create_topic(bootstrap, unique_name("in"), 2)
    sink = create_topic(bootstrap, unique_name("out"), 2)
    app_id = unique_name("batch-alos")
    records = [(f"k{i % 5}", f"v{i:04d}") for i in range(1500)]
    records[900] = ("k0", "poison-900")
    produce(bootstrap, source, records)
    processor = UpperBatches(sink)
    app = application(
        bootstrap,
        app_id,
        source,
        processor,
        processing_guarantee="at_least_once",
        processing_error_policy="skip",
    )
    runner = AppThread(app).start()
    app_threads.append(runner)
    wait_committed(bootstrap, app_id, source, thread=runner)
    runner.stop()

    expected = {r.value.upper() for r in not_poison(read_topic(bootstrap, source)) if r.value}
    outputs = [r.value for r in read_topic(bootstrap, sink)]
    print(
        f"outputs={len(outputs)} distinct={len(set(outputs))} expected={len(expected)} "
        f"skipped={app._stats.skipped} aborts={app.state.abort_count}"
    )
    assert set(outputs) == expected
    assert app._stats.skipped == 1
    assert max(processor.sizes) > 1
