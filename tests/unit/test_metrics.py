"""Prometheus export of EngineStats: the collector, the histogram math, the endpoint."""

from __future__ import annotations

import math
import random
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

from eos.errors import ConfigError
from eos.metrics import (
    ABORTS,
    APP_STATE,
    BATCH_RECORDS,
    COMMIT_DURATION,
    METRIC_NAMES,
    PROCESSING_LAG,
    PROCESSING_LATENCY,
    RESTORE_DURATION,
    EosCollector,
    register_metrics,
)
from eos.stats import LATENCY_BUCKETS, AppState, BucketHistogram, EngineStats, PartitionState

NOW = 1_700_000_000.0
NOW_MS = int(NOW * 1000)
HISTOGRAMS = (PROCESSING_LATENCY, COMMIT_DURATION, BATCH_RECORDS, RESTORE_DURATION)


def filled(application_id: str = "app") -> EngineStats:
    stats = EngineStats(application_id, clock=lambda: NOW)
    stats.state = "running"
    stats.record_batch(10, NOW_MS - 2000, NOW_MS - 1000)
    stats.record_commit(10, 0.02, produced=7)
    stats.record_batch(5, NOW_MS - 100, NOW_MS - 100)
    stats.record_commit(5, 0.2, produced=3)
    stats.record_abort("commit_failed")
    stats.processing_errors = 4
    stats.skipped = 1
    stats.dead_lettered = 2
    stats.rebalances = 3
    stats.fenced = 1
    stats.record_restore(500, 1.5)
    stats.assigned = [("in", 0), ("in", 1)]
    stats.set_partition("in", 0, 120, 100)
    stats.set_partition("in", 1, 50, 50)
    return stats


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    result: float | None = registry.get_sample_value(name, labels)
    return result


def brute_force(bounds: tuple[float, ...], count: int, low: float, high: float) -> list[int]:
    points = (
        [(low + high) / 2] * count
        if count == 1
        else [low + (high - low) * i / (count - 1) for i in range(count)]
    )
    return [sum(1 for p in points if p <= b) for b in bounds] + [count]


def test_collector_yields_every_series_with_its_value() -> None:
    """Every declared metric name appears, labelled by application_id, with the stats' values."""
    registry = CollectorRegistry()
    registry.register(EosCollector(filled()))
    families = {f.name: f for f in registry.collect()}
    exported = {s.name for f in families.values() for s in f.samples}
    for name in METRIC_NAMES:
        wanted = f"{name}_count" if name in HISTOGRAMS else name
        assert wanted in exported, name
    for family in families.values():
        for sample in family.samples:
            assert sample.labels["application_id"] == "app", sample

    app = {"application_id": "app"}
    expected = {
        "eos_processed_records_total": 15,
        "eos_produced_records_total": 10,
        "eos_transaction_commits_total": 2,
        "eos_processing_errors_total": 4,
        "eos_skipped_records_total": 1,
        "eos_dead_letter_records_total": 2,
        "eos_rebalances_total": 3,
        "eos_producer_fenced_total": 1,
        "eos_state_restore_records_total": 500,
        "eos_assigned_partitions": 2,
        "eos_last_commit_timestamp_seconds": NOW,
        "eos_batch_records_count": 2,
        "eos_batch_records_sum": 15,
        "eos_commit_duration_seconds_count": 2,
        "eos_commit_duration_seconds_sum": pytest.approx(0.22),
        'eos_commit_duration_seconds_bucket{le="0.025"}': 1,
        'eos_commit_duration_seconds_bucket{le="0.25"}': 2,
        "eos_processing_latency_seconds_count": 15,
        "eos_processing_latency_seconds_sum": pytest.approx(10 * 1.5 + 5 * 0.1),
        'eos_processing_latency_seconds_bucket{le="0.1"}': 5,
        'eos_processing_latency_seconds_bucket{le="1.0"}': 6,
        'eos_processing_latency_seconds_bucket{le="+Inf"}': 15,
        "eos_state_restore_seconds_count": 1,
        "eos_state_restore_seconds_sum": 1.5,
    }
    for key, wanted_value in expected.items():
        name, _, le = key.partition('{le="')
        labels = dict(app, le=le[:-2]) if le else app
        assert value(registry, name, **labels) == wanted_value, key
    assert value(registry, "eos_app_state", application_id="app", state="running") == 1
    assert value(registry, "eos_app_state", application_id="app", state="created") == 0
    lag = value(registry, PROCESSING_LAG, application_id="app", topic="in", partition="0")
    assert lag == 20
    text = generate_latest(registry).decode()
    assert 'eos_info{application_id="app",version="' in text


def test_spread_histogram_counts_match_evenly_spaced_points() -> None:
    """observe_spread puts exactly the counts of evenly spaced points into each bucket."""
    rng = random.Random(7)
    for _ in range(500):
        histogram = BucketHistogram(LATENCY_BUCKETS)
        count = rng.randint(1, 3000)
        low = rng.uniform(0, 20)
        high = low + rng.choice([0.0, rng.uniform(0, 0.01), rng.uniform(0, 50)])
        histogram.observe_spread(count, low, high)
        snapshot = histogram.snapshot()
        assert list(snapshot.cumulative) == brute_force(snapshot.bounds, count, low, high)
        assert snapshot.count == count
        assert math.isclose(snapshot.sum, count * (low + high) / 2)


def test_spread_histogram_exact_small_case() -> None:
    """Eleven points 0.0..1.0 land 1/5/10/11 at le 0.0/0.45/0.95/1.0, swapped ends included."""
    histogram = BucketHistogram([0.0, 0.45, 0.95, 1.0])
    histogram.observe_spread(11, 1.0, 0.0)
    snapshot = histogram.snapshot()
    assert snapshot.cumulative == (1, 5, 10, 11, 11)
    assert snapshot.sum == pytest.approx(5.5)
    histogram.observe_spread(0, 0.0, 1.0)
    histogram.observe(2.0)
    assert histogram.snapshot().cumulative == (1, 5, 10, 11, 12)


def test_histogram_rejects_bad_buckets() -> None:
    """Empty, repeated or infinite bounds are a ValueError, not a broken exposition."""
    for bad in ([], [1.0, 1.0], [1.0, math.inf]):
        with pytest.raises(ValueError):
            BucketHistogram(bad)


def test_latency_is_measured_at_commit_and_dropped_on_abort() -> None:
    """Pending batches become latency observations at commit; an abort discards them."""
    stats = EngineStats("app", clock=lambda: NOW)
    stats.record_batch(100, NOW_MS - 3000, NOW_MS - 3000)
    stats.record_abort("processing_error")
    stats.record_batch(4, NOW_MS - 500, NOW_MS - 500)
    stats.record_batch(3, 0, -1)  # no timestamps: counted as processed, no latency
    stats.record_batch(2, NOW_MS + 5000, NOW_MS + 5000)  # producer clock ahead: age 0
    stats.record_commit(9, 0.01)
    latency = stats.view().latency
    assert latency.count == 6
    assert latency.sum == pytest.approx(4 * 0.5)
    assert stats.processed == 9
    stats.record_commit(0, 0.01)
    assert stats.view().latency.count == 6


def test_pending_batches_are_bounded() -> None:
    """Batches beyond the pending limit fold into the last one, keeping every record."""
    stats = EngineStats("app", clock=lambda: NOW)
    for _ in range(5000):
        stats.record_batch(1, NOW_MS - 1000, NOW_MS - 1000)
    assert len(stats._pending) <= 1024
    stats.record_commit(5000, 0.01)
    assert stats.view().latency.count == 5000


def test_two_applications_use_two_registries_without_collision() -> None:
    """Two apps register in their own registries; a second app in one registry is refused."""
    first, second = filled("one"), EngineStats("two")
    second.record_commit(3, 0.01)
    registry_one, registry_two = CollectorRegistry(), CollectorRegistry()
    handle_one = register_metrics(first, registry=registry_one)
    handle_two = register_metrics(second, registry=registry_two)
    name = "eos_processed_records_total"
    assert value(registry_one, name, application_id="one") == 15
    assert value(registry_two, name, application_id="two") == 3
    assert value(registry_one, name, application_id="two") is None
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        register_metrics(second, registry=registry_one)
    handle_one.close()
    handle_one.close()
    assert value(registry_one, name, application_id="one") is None
    register_metrics(second, registry=registry_one).close()
    handle_two.close()


def test_http_endpoint_serves_metrics_and_close_stops_it() -> None:
    """Port 0 binds a free port on a private registry; /metrics answers; close() frees it."""
    handle = register_metrics(filled("web"), port=0)
    try:
        assert handle.port and handle.port > 0
        assert handle.registry is not REGISTRY
        assert value(REGISTRY, "eos_processed_records_total", application_id="web") is None
        url = f"http://127.0.0.1:{handle.port}/metrics"
        assert handle.url == url
        with urllib.request.urlopen(url, timeout=5) as response:
            body = response.read().decode()
        assert 'eos_processed_records_total{application_id="web"} 15.0' in body
        assert 'eos_processing_lag{application_id="web",partition="0",topic="in"} 20.0' in body
    finally:
        handle.close()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url, timeout=2)
    assert value(handle.registry, "eos_processed_records_total", application_id="web") is None


def test_port_in_use_is_a_config_error_and_registers_nothing() -> None:
    """A port that cannot be bound raises ConfigError naming metrics.port and unregisters."""
    with register_metrics(EngineStats("a"), port=0) as taken:
        registry = CollectorRegistry()
        with pytest.raises(ConfigError) as info:
            register_metrics(EngineStats("b"), registry=registry, port=taken.port)
        assert info.value.key == "metrics.port"
        assert list(registry.collect()) == []


def test_abort_reasons_are_labels() -> None:
    """Each abort reason is its own series; known reasons start at 0, new ones appear."""
    stats = EngineStats("app")
    stats.record_abort("output_rejected")
    stats.record_abort("output_rejected")
    stats.record_abort("injected")
    registry = CollectorRegistry()
    registry.register(EosCollector(stats))
    for reason, wanted in {
        "output_rejected": 2,
        "injected": 1,
        "processing_error": 0,
        "commit_failed": 0,
        "produce_failed": 0,
        "partitions_lost": 0,
    }.items():
        assert value(registry, ABORTS, application_id="app", reason=reason) == wanted, reason
    assert stats.snapshot().abort_count == 3


def test_lag_is_end_minus_committed_and_never_negative() -> None:
    """Lag is end - committed, clamped at 0, absent when unknown, gone after revoke."""
    stats = EngineStats("app")
    stats.set_partition("in", 0, 120, 100)
    stats.set_partition("in", 1, 10, 15)  # end seen before the commit moved past it
    stats.set_partition("in", 2, -1001, 7)  # OFFSET_INVALID: unknown
    stats.set_partition("in", 3, 40, None)
    state = stats.snapshot()
    assert state.partitions[("in", 0)] == PartitionState(120, 100, 20)
    assert state.partitions[("in", 1)].lag == 0
    assert state.partitions[("in", 2)] == PartitionState(None, 7, None)
    assert state.partitions[("in", 3)].lag is None
    assert state.lag == 20
    registry = CollectorRegistry()
    registry.register(EosCollector(stats))
    labels = {"application_id": "app", "topic": "in"}
    assert value(registry, PROCESSING_LAG, partition="1", **labels) == 0
    assert value(registry, PROCESSING_LAG, partition="2", **labels) is None
    stats.drop_partitions([("in", 0), ("in", 9)])
    assert value(registry, PROCESSING_LAG, partition="0", **labels) is None
    assert stats.snapshot().lag == 0


def test_snapshot_is_a_frozen_app_state() -> None:
    """snapshot() copies counters, assignment and offsets into an immutable AppState."""
    stats = filled()
    state = stats.snapshot()
    assert isinstance(state, AppState)
    assert (state.state, state.processed_count, state.commit_count, state.abort_count) == (
        "running",
        15,
        2,
        1,
    )
    assert state.assigned_partitions == (("in", 0), ("in", 1))
    assert state.last_commit_time == NOW
    assert state.lag == 20
    with pytest.raises(TypeError):
        state.partitions[("in", 5)] = PartitionState(1, 1, 0)  # type: ignore[index]
    stats.set_partition("in", 0, 500, 100)
    assert state.partitions[("in", 0)].end_offset == 120
    assert AppState("created", 0, 0, 0, (), None).lag == 0


def test_scrapes_see_consistent_histograms_while_the_engine_writes() -> None:
    """A scrape during commits sees each histogram's +Inf bucket equal to its count."""
    stats = EngineStats("app", clock=lambda: NOW)
    done = threading.Event()

    def write() -> None:
        for i in range(3000):
            stats.record_batch(10, NOW_MS - i, NOW_MS)
            stats.record_commit(10, 0.001 * (i % 50))
            stats.set_partition("in", i % 7, i + 10, i)
            if i % 100 == 0:
                stats.drop_partitions([("in", i % 7)])
        done.set()

    writer = threading.Thread(target=write)
    writer.start()
    scrapes = 0
    while not done.is_set() or scrapes == 0:
        view = stats.view()
        for snapshot in (view.latency, view.commit_duration, view.batch_records):
            assert snapshot.cumulative[-1] == snapshot.count
            assert list(snapshot.cumulative) == sorted(snapshot.cumulative)
        assert view.commit_duration.count == view.commits
        scrapes += 1
    writer.join()
    assert stats.view().latency.count == 30000


def test_import_eos_does_not_import_prometheus_client() -> None:
    """import eos (and eos.stats) works without loading prometheus_client; nothing registers."""
    code = (
        "import sys, eos, eos.stats\n"
        "assert 'prometheus_client' not in sys.modules, 'loaded by import eos'\n"
        "import eos.metrics\n"
        "assert 'prometheus_client' not in sys.modules, 'loaded by import eos.metrics'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_app_state_gauge_has_one_current_state() -> None:
    """eos_app_state is 1 for exactly the current state."""
    stats = EngineStats("app")
    registry = CollectorRegistry()
    registry.register(EosCollector(stats))
    for state in ("restoring", "failed"):
        stats.state = state
        samples = [s for f in registry.collect() if f.name == APP_STATE for s in f.samples]
        assert {s.labels["state"] for s in samples if s.value == 1} == {state}
        assert len(samples) == 7
