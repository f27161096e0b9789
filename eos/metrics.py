"""Prometheus metrics for one application, read from its ``EngineStats`` at scrape time.

The engine never touches a Prometheus object: it updates
:class:`~eos.stats.EngineStats` per batch and per commit, and
:class:`EosCollector` turns one consistent copy of it
(:meth:`~eos.stats.EngineStats.view`) into metric families whenever the
registry is scraped. So metrics cost nothing per record, and the scrape
thread never blocks the processing thread for longer than a copy of a few
dictionaries.

Nothing is registered on import, and ``prometheus_client`` is imported only
when a collector is built or :func:`register_metrics` is called, so
``import eos`` works without it. Every series carries the label
``application_id``; see ``docs/monitoring.md`` for each one's meaning.

The same HTTP endpoint answers two health checks for Kubernetes probes (see
``docs/monitoring.md``, "Health endpoints"): ``GET /healthz`` (liveness,
:func:`liveness`) and ``GET /ready`` (readiness, :func:`readiness`), each
200 or 503 with a small JSON body that says why. They read
:meth:`~eos.stats.EngineStats.health`, which the processing loop keeps up to
date with one timestamp per turn.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Final
from wsgiref.simple_server import WSGIServer

from eos.errors import ConfigError
from eos.health import serve, with_health
from eos.stats import RUN_STATES, EngineStats, HistogramSnapshot

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import CollectorRegistry

__all__ = [
    "ABORTS",
    "APP_STATE",
    "ASSIGNED_PARTITIONS",
    "BATCH_RECORDS",
    "COMMITS",
    "COMMIT_DURATION",
    "CONSECUTIVE_ABORTS",
    "CONSUMER_RENEWALS",
    "DEAD_LETTER_RECORDS",
    "FENCED",
    "INFO",
    "LAST_COMMIT_TIMESTAMP",
    "LATE_RECORDS",
    "METRIC_NAMES",
    "PROCESSED_RECORDS",
    "PROCESSING_ERRORS",
    "PROCESSING_LAG",
    "PROCESSING_LATENCY",
    "PRODUCED_RECORDS",
    "REBALANCES",
    "RECORDS_IN_FLIGHT",
    "RECORD_TIMEOUTS",
    "RESTORE_DURATION",
    "RESTORE_RECORDS",
    "SINK_ABORTS",
    "SINK_COMMIT_DURATION",
    "SINK_METRIC_NAMES",
    "SINK_OUTAGE",
    "SINK_ROWS",
    "SKIPPED_RECORDS",
    "TIMERS_FIRED",
    "EosCollector",
    "MetricsHandle",
    "register_metrics",
]

PROCESSED_RECORDS: Final = "eos_processed_records_total"
PRODUCED_RECORDS: Final = "eos_produced_records_total"
COMMITS: Final = "eos_transaction_commits_total"
ABORTS: Final = "eos_transaction_aborts_total"
PROCESSING_ERRORS: Final = "eos_processing_errors_total"
SKIPPED_RECORDS: Final = "eos_skipped_records_total"
DEAD_LETTER_RECORDS: Final = "eos_dead_letter_records_total"
LATE_RECORDS: Final = "eos_late_records_total"
TIMERS_FIRED: Final = "eos_timers_fired_total"
RECORDS_IN_FLIGHT: Final = "eos_records_in_flight"
RECORD_TIMEOUTS: Final = "eos_record_timeouts_total"
REBALANCES: Final = "eos_rebalances_total"
FENCED: Final = "eos_producer_fenced_total"
RESTORE_RECORDS: Final = "eos_state_restore_records_total"
PROCESSING_LAG: Final = "eos_processing_lag"
ASSIGNED_PARTITIONS: Final = "eos_assigned_partitions"
LAST_COMMIT_TIMESTAMP: Final = "eos_last_commit_timestamp_seconds"
APP_STATE: Final = "eos_app_state"
INFO: Final = "eos_info"
PROCESSING_LATENCY: Final = "eos_processing_latency_seconds"
COMMIT_DURATION: Final = "eos_commit_duration_seconds"
BATCH_RECORDS: Final = "eos_batch_records"
RESTORE_DURATION: Final = "eos_state_restore_seconds"
CONSECUTIVE_ABORTS: Final = "eos_consecutive_aborts"
CONSUMER_RENEWALS: Final = "eos_consumer_renewals_total"
SINK_ROWS: Final = "eos_sink_rows_committed_total"
SINK_COMMIT_DURATION: Final = "eos_sink_commit_duration_seconds"
SINK_ABORTS: Final = "eos_sink_transaction_aborts_total"
SINK_OUTAGE: Final = "eos_sink_outage_seconds"

METRIC_NAMES: Final = (
    PROCESSED_RECORDS,
    PRODUCED_RECORDS,
    COMMITS,
    ABORTS,
    PROCESSING_ERRORS,
    SKIPPED_RECORDS,
    DEAD_LETTER_RECORDS,
    LATE_RECORDS,
    TIMERS_FIRED,
    RECORD_TIMEOUTS,
    RECORDS_IN_FLIGHT,
    REBALANCES,
    FENCED,
    CONSUMER_RENEWALS,
    RESTORE_RECORDS,
    PROCESSING_LAG,
    ASSIGNED_PARTITIONS,
    LAST_COMMIT_TIMESTAMP,
    CONSECUTIVE_ABORTS,
    APP_STATE,
    INFO,
    PROCESSING_LATENCY,
    COMMIT_DURATION,
    BATCH_RECORDS,
    RESTORE_DURATION,
)

SINK_METRIC_NAMES: Final = (SINK_ROWS, SINK_COMMIT_DURATION, SINK_ABORTS, SINK_OUTAGE)
"""Exported only by an application whose processor is a sink (labels add ``sink``)."""

_APP: Final = ("application_id",)


class EosCollector:
    """A Prometheus collector over one :class:`~eos.stats.EngineStats`.

    It implements ``prometheus_client``'s ``Collector`` protocol
    (``collect`` and ``describe``) structurally instead of subclassing it,
    so this module imports ``prometheus_client`` only when a scrape or a
    registration happens. ``describe`` returns the same families as
    ``collect`` so that registering two collectors with the same names in
    one registry fails at once with ``DuplicateTimeseries``, also on
    registries created without ``auto_describe``.

    Threading: ``collect`` runs on the scrape thread and only reads the
    stats through :meth:`~eos.stats.EngineStats.view`.

    Args:
        stats: The stats of the application to export.
    """

    def __init__(self, stats: EngineStats) -> None:
        self.stats = stats

    def describe(self) -> Iterator[Metric]:
        """The families this collector yields (for the registry's name check)."""
        return self.collect()

    def collect(self) -> Iterator[Metric]:
        """Read the stats once and yield every eos metric family."""
        from prometheus_client.metrics_core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        view = self.stats.view()
        app = [view.application_id]

        def counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
            family = CounterMetricFamily(name, documentation, labels=_APP)
            family.add_metric(app, value)
            return family

        def histogram(
            name: str, documentation: str, snapshot: HistogramSnapshot
        ) -> HistogramMetricFamily:
            family = HistogramMetricFamily(name, documentation, labels=_APP)
            family.add_metric(app, _buckets(snapshot), snapshot.sum)
            return family

        yield counter(PROCESSED_RECORDS, "Input records in committed transactions.", view.processed)
        yield counter(
            PRODUCED_RECORDS,
            "Output records made visible by committed transactions.",
            view.produced,
        )
        yield counter(COMMITS, "Committed transactions.", view.commits)
        aborts = CounterMetricFamily(
            ABORTS, "Aborted transactions, by reason.", labels=(*_APP, "reason")
        )
        for reason, count in sorted(view.abort_reasons.items()):
            aborts.add_metric([view.application_id, reason], count)
        yield aborts
        yield counter(
            PROCESSING_ERRORS,
            "Records whose processing or deserialization failed (each attempt counts).",
            view.processing_errors,
        )
        yield counter(
            SKIPPED_RECORDS,
            "Failing records skipped by processing_error_policy=skip.",
            view.skipped,
        )
        yield counter(
            DEAD_LETTER_RECORDS,
            "Failing records produced to the dead-letter topic.",
            view.dead_lettered,
        )
        yield counter(
            LATE_RECORDS,
            "Records a window dropped because they arrived after it closed (end + grace).",
            view.late_records,
        )
        yield counter(
            TIMERS_FIRED,
            "Timers and punctuations fired (an aborted transaction fires them again).",
            view.timers_fired,
        )
        yield counter(
            RECORD_TIMEOUTS,
            "Records of an async processor cancelled after record_timeout_ms.",
            view.record_timeouts,
        )
        in_flight = GaugeMetricFamily(
            RECORDS_IN_FLIGHT,
            "Records of an async processor admitted and not finished (at most max_in_flight "
            "running, the rest waiting for their key or a slot).",
            labels=_APP,
        )
        in_flight.add_metric(app, view.in_flight)
        yield in_flight
        yield counter(REBALANCES, "Partition assignments received.", view.rebalances)
        yield counter(
            FENCED, "Times the transactional producer was fenced or failed fatally.", view.fenced
        )
        yield counter(
            CONSUMER_RENEWALS,
            "Times the consumer failed fatally and was replaced by a new one.",
            view.consumer_renewals,
        )
        yield counter(
            RESTORE_RECORDS, "Changelog records applied while restoring state.", view.restored
        )

        lag = GaugeMetricFamily(
            PROCESSING_LAG,
            "End offset minus committed position, per assigned input partition.",
            labels=(*_APP, "topic", "partition"),
        )
        for (topic, partition), part in sorted(view.partitions.items()):
            if part.lag is not None:
                lag.add_metric([view.application_id, topic, str(partition)], part.lag)
        yield lag
        assigned = GaugeMetricFamily(
            ASSIGNED_PARTITIONS, "Input partitions assigned to this instance.", labels=_APP
        )
        assigned.add_metric(app, len(view.assigned))
        yield assigned
        last_commit = GaugeMetricFamily(
            LAST_COMMIT_TIMESTAMP, "Unix time of the last committed transaction.", labels=_APP
        )
        if view.last_commit_time is not None:
            last_commit.add_metric(app, view.last_commit_time)
        yield last_commit
        consecutive = GaugeMetricFamily(
            CONSECUTIVE_ABORTS,
            "Aborts in a row without a commit (0 when healthy; an outage keeps it rising).",
            labels=_APP,
        )
        consecutive.add_metric(app, view.consecutive_aborts)
        yield consecutive
        state = GaugeMetricFamily(
            APP_STATE, "1 for the current run state, 0 for the others.", labels=(*_APP, "state")
        )
        for name in RUN_STATES:
            state.add_metric([view.application_id, name], 1.0 if name == view.state else 0.0)
        yield state
        info = GaugeMetricFamily(INFO, "eos version; always 1.", labels=(*_APP, "version"))
        info.add_metric([view.application_id, _version()], 1.0)
        yield info

        yield histogram(
            PROCESSING_LATENCY,
            "Record timestamp to the commit of its transaction (per record, "
            "spread evenly over each batch's timestamp range).",
            view.latency,
        )
        yield histogram(COMMIT_DURATION, "Time to commit one transaction.", view.commit_duration)
        yield histogram(
            BATCH_RECORDS, "Input records per committed transaction.", view.batch_records
        )
        yield histogram(
            RESTORE_DURATION,
            "Time to restore newly assigned store partitions.",
            view.restore_duration,
        )
        sink = view.sink
        if sink is not None:
            labels = (*_APP, "sink")
            values = [view.application_id, sink.name]
            rows = CounterMetricFamily(
                SINK_ROWS,
                "Rows written (INSERT, UPDATE, DELETE, MERGE) by committed sink transactions.",
                labels=labels,
            )
            rows.add_metric(values, sink.rows)
            yield rows
            sink_aborts = CounterMetricFamily(
                SINK_ABORTS,
                "Sink database transactions rolled back, by reason.",
                labels=(*labels, "reason"),
            )
            for reason, count in sorted(sink.aborts.items()):
                sink_aborts.add_metric([*values, reason], count)
            yield sink_aborts
            outage = GaugeMetricFamily(
                SINK_OUTAGE,
                "Seconds the sink's database has been unreachable (0 when it answers).",
                labels=labels,
            )
            outage.add_metric(values, sink.outage_seconds)
            yield outage
            duration = HistogramMetricFamily(
                SINK_COMMIT_DURATION,
                "Time to commit one sink database transaction (offsets update and COMMIT).",
                labels=labels,
            )
            duration.add_metric(values, _buckets(sink.commit_duration), sink.commit_duration.sum)
            yield duration


class MetricsHandle:
    """What :func:`register_metrics` set up; :meth:`close` undoes it.

    Attributes:
        registry: The registry the collector is registered in.
        collector: The registered collector.
        port: The port the HTTP endpoint is bound to (the real one when 0 was
            asked for), or ``None`` without an endpoint.
        bind_address: The address the endpoint is bound to, if any.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        collector: EosCollector,
        server: WSGIServer | None = None,
        thread: threading.Thread | None = None,
        bind_address: str | None = None,
    ) -> None:
        self.registry = registry
        self.collector = collector
        self.bind_address = bind_address
        self.port: int | None = server.server_port if server is not None else None
        self._server = server
        self._thread = thread
        self._closed = False

    @property
    def url(self) -> str | None:
        """The scrape URL, or ``None`` without an endpoint."""
        if self.port is None or self.bind_address is None:
            return None
        host = f"[{self.bind_address}]" if ":" in self.bind_address else self.bind_address
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        """Unregister the collector and stop the endpoint. Idempotent; any thread."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(KeyError):  # unregistered by someone else already
            self.registry.unregister(self.collector)
        server = self._server
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5.0)

    def __enter__(self) -> MetricsHandle:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        where = self.url or "no endpoint"
        return f"<MetricsHandle {self.collector.stats.application_id!r} {where}>"


def register_metrics(
    stats: EngineStats,
    registry: CollectorRegistry | None = None,
    port: int | None = None,
    bind_address: str = "127.0.0.1",
) -> MetricsHandle:
    """Export ``stats`` to Prometheus; optionally serve ``/metrics`` over HTTP.

    The HTTP endpoint also answers ``/healthz`` (:func:`~eos.health.liveness`) and
    ``/ready`` (:func:`~eos.health.readiness`); every other path is Prometheus's.

    Args:
        stats: The application's stats.
        registry: Where to register the collector. ``None`` means a new
            private registry when ``port`` is given (two applications in one
            process then never collide), and ``prometheus_client.REGISTRY``
            otherwise (to be served by the caller's own endpoint).
        port: Serve the registry at ``http://bind_address:port/metrics``
            (and the health checks) on daemon threads; 0 picks a free port
            (see ``MetricsHandle.port``).
        bind_address: The address the endpoint binds to.

    Returns:
        A handle; call ``close()`` on shutdown.

    Raises:
        ValueError: ``prometheus_client.registry.DuplicateTimeseries`` when
            ``registry`` already holds eos metrics (another application).
        ConfigError: The endpoint could not bind ``bind_address:port``.
    """
    import prometheus_client

    if registry is None:
        registry = (
            prometheus_client.CollectorRegistry()
            if port is not None
            else prometheus_client.REGISTRY
        )
    collector = EosCollector(stats)
    registry.register(collector)
    if port is None:
        return MetricsHandle(registry, collector)
    app = with_health(stats, prometheus_client.make_wsgi_app(registry))
    try:
        server, thread = serve(app, bind_address, port)
    except OSError as exc:
        registry.unregister(collector)
        raise ConfigError(
            f"cannot serve metrics on {bind_address}:{port}: {exc}", "metrics.port"
        ) from exc
    return MetricsHandle(registry, collector, server, thread, bind_address)


def _buckets(snapshot: HistogramSnapshot) -> list[tuple[str, float]]:
    # repr() of a float is what prometheus_client's own histograms print for
    # bounds like these ("0.001", "1.0", "100000.0").
    buckets = [
        (repr(bound), float(count))
        for bound, count in zip(snapshot.bounds, snapshot.cumulative[:-1], strict=True)
    ]
    buckets.append(("+Inf", float(snapshot.count)))
    return buckets


@functools.cache
def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("eos-kafka")
    except PackageNotFoundError:  # running from a source tree
        return "0.0.0"
