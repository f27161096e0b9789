"""The /metrics endpoint and app.state report what the engine did."""

from __future__ import annotations

import threading
import time
import urllib.request

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

import eos
from eos.testing.faults import FailCommits
from eos.testing.helpers import create_topic, produce, unique_name, wait_caught_up

pytestmark = pytest.mark.integration


class Upper(eos.Processor):
    def __init__(self, output: str) -> None:
        self.output = output

    def process(self, record: eos.Record, ctx: eos.Context) -> None:
        ctx.send(self.output, record.value.upper(), key=record.key)  # type: ignore[union-attr]


def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def _value(samples: dict, name: str, **labels: str) -> float:
    total = 0.0
    found = False
    for (sample_name, sample_labels), value in samples.items():
        if sample_name == name and all((k, v) in sample_labels for k, v in labels.items()):
            total += value
            found = True
    assert found, f"{name}{labels} not exported"
    return total


def test_metrics_match_processing_and_app_state(bootstrap) -> None:
    """5,000 records: processed_total = 5,000, commits > 0, aborts 0, lag 0 once caught up,
    app.state agrees; then an injected abort increments aborts with its reason."""
    source = create_topic(bootstrap, unique_name("in"), 2)
    sink = create_topic(bootstrap, unique_name("out"), 2)
    app_id = unique_name("metrics")
    produce(bootstrap, source, ((f"k{i % 20}", f"v{i}") for i in range(5000)))
    app = eos.Application(
        application_id=app_id,
        bootstrap_servers=bootstrap,
        input_topics=[source],
        processor=Upper(sink),
        metrics_port=0,
    )
    thread = threading.Thread(target=app.run, daemon=True)
    thread.start()
    try:
        wait_caught_up(bootstrap, app_id, source, timeout=60)
        deadline = time.monotonic() + 10
        while app.state.lag != 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert app.metrics_url is not None
        samples = _scrape(app.metrics_url)
        state = app.state
        processed = _value(samples, "eos_processed_records_total", application_id=app_id)
        commits = _value(samples, "eos_transaction_commits_total", application_id=app_id)
        aborts = _value(samples, "eos_transaction_aborts_total", application_id=app_id)
        lag = _value(samples, "eos_processing_lag", application_id=app_id)
        print(f"processed={processed} commits={commits} aborts={aborts} lag={lag} state={state}")
        assert processed == 5000 == state.processed_count
        assert commits > 0 and commits == state.commit_count
        assert aborts == 0 == state.abort_count
        assert lag == 0 == state.lag
        assert (
            _value(samples, "eos_processing_latency_seconds_count", application_id=app_id) == 5000
        )
    finally:
        app.stop()
        thread.join(60)

    # A second run of the same application with the next commit failing.
    registry = CollectorRegistry()
    app = eos.Application(
        application_id=app_id,
        bootstrap_servers=bootstrap,
        input_topics=[source],
        processor=Upper(sink),
        metrics_registry=registry,
        faults=FailCommits(1),
    )
    thread = threading.Thread(target=app.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while len(app.state.assigned_partitions) < 2:
            assert time.monotonic() < deadline, "the second run was never assigned its partitions"
            time.sleep(0.1)
        produce(bootstrap, source, ((f"k{i % 20}", f"w{i}") for i in range(100)))
        wait_caught_up(bootstrap, app_id, source, timeout=60)
        value = registry.get_sample_value(
            "eos_transaction_aborts_total", {"application_id": app_id, "reason": "commit_failed"}
        )
        assert value == 1 == app.state.abort_count
        assert app.state.processed_count == 100
    finally:
        app.stop()
        thread.join(60)
