"""``eos verify`` against a real broker: it finds a duplicate and a loss written by hand,
and passes an application run with ``lineage_headers=True``."""

from __future__ import annotations

import re

import pytest
from apprunner import AppThread, wait_committed
from confluent_kafka import Producer

import eos
from eos.audit import LINEAGE_HEADER
from eos.cli import main
from eos.testing.helpers import ReadRecord, create_topic, produce, read_topic, unique_name

pytestmark = pytest.mark.integration

RECORDS = 200


def _write_outputs(bootstrap: str, topic: str, inputs: list[ReadRecord]) -> None:
    """One output per input, as an application with lineage headers would, by a plain
    (non-transactional) producer."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for record in inputs:
        lineage = f"{record.topic}/{record.partition}/{record.offset}/0".encode()
        producer.produce(
            topic,
            (record.value or b"").upper(),
            record.key,
            headers=[(LINEAGE_HEADER, lineage)],
        )
    assert producer.flush(30) == 0


def _verify(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(["verify", *argv])
    return code, capsys.readouterr().out


def test_verify_finds_a_duplicate_and_a_loss_written_by_hand(
    bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Outputs written by hand with lineage headers: all there once passes (exit 0); one
    input left out and another written twice fails (exit 1) naming both."""
    source = create_topic(bootstrap, unique_name("verify-in"), 2)
    produce(bootstrap, source, ((f"k{i % 7}", f"v{i:04d}") for i in range(RECORDS)))
    inputs = read_topic(bootstrap, source)
    clean = create_topic(bootstrap, unique_name("verify-clean"), 2)
    _write_outputs(bootstrap, clean, inputs)
    lost, repeated = inputs[10], inputs[20]
    dirty = create_topic(bootstrap, unique_name("verify-dirty"), 2)
    # The copy right after its original: a duplicate, and no order violation.
    dirty_outputs = [r for r in inputs if r is not lost]
    dirty_outputs.insert(dirty_outputs.index(repeated), repeated)
    _write_outputs(bootstrap, dirty, dirty_outputs)

    code, out = _verify(
        capsys, "--bootstrap-servers", bootstrap, "--input", source, "--output", clean
    )
    assert code == 0, out
    assert f"OK: exactly-once held for {RECORDS} inputs" in out

    code, out = _verify(
        capsys, "--bootstrap-servers", bootstrap, "--input", source, "--output", dirty
    )
    assert code == 1, out
    assert out.splitlines()[-1] == "FAILED: 1 lost, 1 duplicate"
    assert f"{source}/{lost.partition} offset {lost.offset}: 1 input with no output" in out
    assert f"of {source}/{repeated.partition}/{repeated.offset}" in out


def test_an_application_with_lineage_headers_passes_verify(
    bootstrap: str, app_threads: list[AppThread], capsys: pytest.CaptureFixture[str]
) -> None:
    """A DSL pipeline (a filtered branch and a copy: one or two outputs per input) run
    with lineage_headers=True passes ``eos verify`` judged below its committed offsets;
    given only the filtered branch, its dropped inputs are lost, or filtered with
    --filters."""
    source = create_topic(bootstrap, unique_name("verify-src"), 2)
    upper = create_topic(bootstrap, unique_name("verify-upper"), 2)
    copy = create_topic(bootstrap, unique_name("verify-copy"), 2)
    app_id = unique_name("verify-app")
    produce(bootstrap, source, ((f"k{i % 11}", f"v{i:04d}") for i in range(RECORDS)))
    builder = eos.StreamBuilder()
    orders = builder.stream(source, key_serde="string", value_serde="string")
    orders.filter(lambda _k, v: not v.endswith("7")).map_values(str.upper).to(upper)
    orders.to(copy)
    app = eos.Application(
        application_id=app_id,
        bootstrap_servers=bootstrap,
        processor=builder.build(),
        lineage_headers=True,
    )
    runner = AppThread(app).start()
    app_threads.append(runner)
    wait_committed(bootstrap, app_id, source, thread=runner)
    runner.stop()

    sample = read_topic(bootstrap, copy)[0]
    assert dict(sample.headers)[LINEAGE_HEADER].startswith(f"{source}/".encode())
    common = ["--bootstrap-servers", bootstrap, "--input", source]
    code, out = _verify(
        capsys, *common, "--output", upper, "--output", copy, "--application-id", app_id
    )
    assert code == 0, out
    assert f"OK: exactly-once held for {RECORDS} inputs" in out
    dropped = sum(1 for i in range(RECORDS) if str(i).endswith("7"))
    code, out = _verify(capsys, *common, "--output", upper)
    assert code == 1 and out.splitlines()[-1] == f"FAILED: {dropped} lost", out
    code, out = _verify(capsys, *common, "--output", upper, "--filters")
    assert code == 0, out
    assert re.search(rf"^  filtered +{dropped} ", out, re.MULTILINE), out
