"""The async contenders' workload: an HTTP call per record, and the max_in_flight sweep.

Both contenders read the same kind of backlog as ``eos`` (``_harness.prepare_input``:
~100-byte values, keys ``k-<n>``, 4 partitions), call the HTTP service of
``_http.py`` once per record (``GET /tier/<key>``, answered after a fixed
5 ms), decode its JSON answer and emit ``value + b"|" + tier`` under the
record's key, exactly-once:

- ``eos_sync``: an ``eos.Processor`` calling the service with a blocking
  ``http.client`` keep-alive connection: one record at a time, so at most
  1 / latency records/s (200/s at 5 ms);
- ``eos_async``: an ``eos.AsyncProcessor`` with ``max_in_flight``
  (:data:`MAX_IN_FLIGHT`) records at once, on ``_http.HttpClient``: at most
  max_in_flight / latency records/s (:func:`ideal`, 40,000/s);
- ``eos_async_sleep``: ``eos_async`` with the call replaced by ``await
  asyncio.sleep(latency)`` and the answer the service would give: the engine
  without an HTTP stack (no service, no sockets), so what it misses of the
  ideal is eos's (and asyncio's) own.

``eos_sync`` reads a smaller backlog of its own (``--sync-records``): at ~190
records/s, the big one would take hours. Throughput is measured by
``_harness.measure`` as for ``eos`` (records / first consumed record -> last
output visible to a ``read_committed`` reader); ``eos_async`` has its latency
phase too, ``eos_sync`` none (its capacity is below the paced rate). Every
output is read back and checked: its value is an input value plus the tier the
service gives its key (:func:`check_output`).

The sweep (:func:`sweep`) measures ``eos_async`` (and ``eos_async_sleep``) at
each max_in_flight of :data:`SWEEP`, each on a backlog sized for a few seconds
at the ideal rate, and the bare HTTP stack (``_http.bench_client``, no Kafka,
no eos) at the same concurrency: the stack's own ceiling on this machine.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from _harness import Measurement, Spec, _values, measure, prepare_input, read_back
from _http import LATENCY_MS, bench_client, tier_of

ASYNC = ("eos_sync", "eos_async", "eos_async_sleep")
"""The contenders that call the HTTP service (measured with :func:`measure_async`)."""
MAX_IN_FLIGHT = 200
"""``eos_async``'s max_in_flight."""
SWEEP = (1, 10, 50, 100, 200, 400)
"""The max_in_flight values of the sweep."""
SEPARATOR = b"|"


def ideal(max_in_flight: int, latency_ms: float = LATENCY_MS) -> float:
    """Records/s if every record took exactly the service's latency: max_in_flight / latency."""
    return max_in_flight / (latency_ms / 1000)


def check_output(bootstrap: str, topic: str, seen: int) -> tuple[int, list[str]]:
    """Read ``topic`` back (``read_committed``, at least ``seen`` records): every value
    must be an input value, ``|``, and the tier the service gives the record's key.
    Returns ``(wrong, examples)``."""
    values = {*_values(), *_values(1)}
    wrong = 0
    examples: list[str] = []
    for msg in read_back(bootstrap, topic, seen):
        key, value = msg.key() or b"", msg.value() or b""
        prefix, _, tier = value.rpartition(SEPARATOR)
        if prefix not in values or tier != tier_of(key):
            wrong += 1
            if len(examples) < 5:
                examples.append(f"{key!r}: {value!r}, expected tier {tier_of(key)!r}")
    return wrong, examples


def async_argv(spec: Spec, service_url: str, max_in_flight: int) -> Spec:
    """``spec`` with the service's URL and ``max_in_flight``."""
    extra = ["--service-url", service_url, "--max-in-flight", str(max_in_flight)]
    return Spec(spec.name, [*spec.argv, *extra])


def measure_async(
    spec: Spec,
    *,
    bootstrap: str,
    topic: str,
    records: int,
    service_url: str,
    max_in_flight: int,
    commit_interval_ms: int,
    latency_seconds: float,
    run_id: str,
) -> Measurement:
    """One run of an async contender over ``topic`` (``records`` records); see the module doc."""
    m = measure(
        async_argv(spec, service_url, max_in_flight),
        bootstrap=bootstrap,
        backlog_topic=topic,
        records=records,
        commit_interval_ms=commit_interval_ms,
        latency_seconds=latency_seconds,
        run_id=run_id,
        # eos_sync: ~190 records/s; eos_async at max_in_flight 1 too.
        timeout_s=max(120.0, 3 * records / min(ideal(max_in_flight), 20_000)),
        check=lambda output, seen: check_output(bootstrap, output, seen),
    )
    m.extra["max_in_flight"] = max_in_flight
    return m


@dataclass
class SweepPoint:
    """``eos_async`` at one max_in_flight; ``eos_async_sleep`` too (None when not run);
    the bare HTTP stack at that concurrency."""

    max_in_flight: int
    records: int
    records_per_s: float
    sleep_per_s: float | None
    http_per_s: float
    exact: bool

    @property
    def ideal(self) -> float:
        return ideal(self.max_in_flight)


def sweep_records(max_in_flight: int, seconds: float, cap: int, floor: int) -> int:
    """A backlog of ~``seconds`` at the ideal rate, at least ``floor``, at most ``cap``,
    rounded to a thousand (the topics are reused by size)."""
    wanted = max(floor, min(cap, round(ideal(max_in_flight) * seconds)))
    return max(1000, round(wanted, -3))


def sweep(
    specs: Sequence[Spec],
    *,
    bootstrap: str,
    service_url: str,
    keys: int,
    seconds: float,
    cap: int,
    floor: int,
    commit_interval_ms: int,
    run_id: str,
    points: tuple[int, ...] = SWEEP,
    log: Callable[[str], None] = print,
) -> list[SweepPoint]:
    """``eos_async`` (and ``eos_async_sleep`` if in ``specs``) once per max_in_flight of
    ``points``, and the bare HTTP stack; see the module doc."""
    out = []
    for max_in_flight in points:
        records = sweep_records(max_in_flight, seconds, cap, floor)
        topic, _, _ = prepare_input(bootstrap, records, keys)
        rates: dict[str, float] = {}
        exact = True
        for spec in specs:
            m = measure_async(
                spec,
                bootstrap=bootstrap,
                topic=topic,
                records=records,
                service_url=service_url,
                max_in_flight=max_in_flight,
                commit_interval_ms=commit_interval_ms,
                latency_seconds=0,
                run_id=f"{run_id}-mif{max_in_flight}",
            )
            rates[spec.name] = m.records_per_s
            exact = exact and m.exact
        http = asyncio.run(bench_client(service_url, max_in_flight, min(3.0, seconds)))
        point = SweepPoint(
            max_in_flight, records, rates["eos_async"], rates.get("eos_async_sleep"), http, exact
        )
        out.append(point)
        sleep = "" if point.sleep_per_s is None else f"; eos_async_sleep {point.sleep_per_s:,.0f}/s"
        log(
            f"[sweep] max_in_flight={max_in_flight} (ideal {point.ideal:,.0f}/s, {records:,} "
            f"records): eos_async {point.records_per_s:,.0f} records/s "
            f"({point.records_per_s / point.ideal:.0%}){sleep}; bare HTTP stack "
            f"{http:,.0f} requests/s{'' if exact else '; outputs NOT exact'}"
        )
        sys.stdout.flush()
    return out
