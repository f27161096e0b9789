"""An output the broker rejects as too large follows processing_error_policy, exactly once."""

from __future__ import annotations

import pytest
from apprunner import AppThread, Upper, wait_committed

import eos
from eos.testing.helpers import committed_offsets, create_topic, produce, read_topic, unique_name
from eos.testing.verify import verify_exactly_once

pytestmark = pytest.mark.integration

RECORDS = 300
BIG_INDEX = 150
# Bigger than the sink's max.message.bytes (2000), far below the client's
# message.max.bytes (1,000,000): the broker, not librdkafka, rejects it.
BIG_VALUE = "big-" + "x" * 5000
# librdkafka never splits a record batch the broker rejects, so with the default
# batch.size (1 MB) ordinary outputs batched together would exceed 2000 bytes too.
# A producer writing to such a topic must batch below its limit; see
# test_rejected_batch_is_not_blamed_on_every_record_in_it for what happens otherwise.
PRODUCER = {"batch.size": 1000}


def _setup(bootstrap: str, partitions: int) -> tuple[str, str]:
    source = create_topic(bootstrap, unique_name("in"), partitions)
    sink = create_topic(
        bootstrap, unique_name("out"), partitions, config={"max.message.bytes": "2000"}
    )
    records = [(f"k{i % 5}", f"v{i:04d}") for i in range(RECORDS)]
    records[BIG_INDEX] = ("big-key", BIG_VALUE)
    produce(bootstrap, source, records)
    return source, sink


def test_oversize_output_is_dead_lettered_after_few_aborts(bootstrap, app_threads) -> None:
    """Under `dead_letter` the record whose output the broker rejects as too large lands in
    the dead-letter topic after at most 3 aborts, and every other input comes out exactly once."""
    source, sink = _setup(bootstrap, 3)
    dlq = unique_name("dlq")
    app_id = unique_name("oversize-dlq")
    app = eos.Application(
        application_id=app_id,
        bootstrap_servers=bootstrap,
        input_topics=[source],
        processor=Upper(sink),
        processing_error_policy="dead_letter",
        dead_letter_topic=dlq,
        producer_config=PRODUCER,
    )
    runner = AppThread(app).start()
    app_threads.append(runner)
    wait_committed(bootstrap, app_id, source, thread=runner)
    runner.stop()

    inputs = read_topic(bootstrap, source)
    (big,) = [r for r in inputs if r.key == b"big-key"]
    good = [r for r in inputs if r.key != b"big-key"]
    verdict = verify_exactly_once(good, read_topic(bootstrap, sink), bytes.upper)
    dead = read_topic(bootstrap, dlq)
    state = app.state
    print(
        f"records={RECORDS} {verdict} dead_lettered={len(dead)} aborts={state.abort_count} "
        f"reasons={dict(app._stats.abort_reasons)} "
        f"dlq_error={dict(dead[0].headers).get('eos.error.message') if dead else None!r}"
    )
    assert verdict.ok and verdict.inputs == RECORDS - 1, verdict
    assert len(dead) == 1
    headers = dict(dead[0].headers)
    assert dead[0].value == big.value and dead[0].key == big.key
    assert headers["eos.source.offset"] == str(big.offset).encode()
    assert headers["eos.source.partition"] == str(big.partition).encode()
    assert state.abort_count <= 3


def test_oversize_output_under_fail_raises_naming_the_offset(bootstrap, app_threads) -> None:
    """Under `fail` the record whose output the broker rejects makes run() raise
    ProcessingError naming its topic, partition and offset; nothing past it commits."""
    source, sink = _setup(bootstrap, 1)
    app_id = unique_name("oversize-fail")
    app = eos.Application(
        application_id=app_id,
        bootstrap_servers=bootstrap,
        input_topics=[source],
        processor=Upper(sink),
        producer_config=PRODUCER,
    )
    runner = AppThread(app).start()
    app_threads.append(runner)
    error = runner.join(60)
    committed = committed_offsets(bootstrap, app_id, source)[0]
    visible = read_topic(bootstrap, sink)
    print(
        f"error={error!r} committed offset={committed} visible={len(visible)} "
        f"aborts={app.state.abort_count} reasons={dict(app._stats.abort_reasons)}"
    )
    assert isinstance(error, eos.ProcessingError), repr(error)
    assert (error.topic, error.partition, error.offset) == (source, 0, BIG_INDEX)
    assert f"{source}[0]@{BIG_INDEX}" in str(error)
    assert committed <= BIG_INDEX
    inputs = read_topic(bootstrap, source)
    assert [r.value for r in visible] == [r.value.upper() for r in inputs[: max(committed, 0)]]


def test_rejected_batch_is_not_blamed_on_every_record_in_it(bootstrap, app_threads) -> None:
    """With the default batch.size, only the oversize record is dead-lettered, not every
    record that shared its rejected produce batch."""
    source, sink = _setup(bootstrap, 1)
    dlq = unique_name("dlq")
    app_id = unique_name("oversize-batch")
    app = eos.Application(
        application_id=app_id,
        bootstrap_servers=bootstrap,
        input_topics=[source],
        processor=Upper(sink),
        processing_error_policy="dead_letter",
        dead_letter_topic=dlq,
        max_batch_records=100,
    )
    runner = AppThread(app).start()
    app_threads.append(runner)
    wait_committed(bootstrap, app_id, source, thread=runner)
    runner.stop()
    dead = read_topic(bootstrap, dlq)
    print(f"dead_lettered={len(dead)} (expected 1) aborts={app.state.abort_count}")
    assert len(dead) == 1
