"""Stream-table joins and a re-keyed count under SIGKILL: exactly once, with the right table row.

tests/chaos/join_app.py runs in a child process (RocksDB stores) against the real broker:
orders left-joined with a customers table (the record of the customer that was current at
the order's time, by its version) and counted per region through a repartition topic. The
outputs are read back with a ``read_committed`` consumer.

The expectation comes from the topics as they were produced: per partition, customers
and orders merged by timestamp (a customer record first on equal timestamps); an order is
joined with the last customer record before it. So each check is exact:

- every order is in the joined output exactly once, with its customer's tier and version
  current at the order's time (or none, for a customer not seen yet);
- per region, the count updates are exactly 1..N (N: the region's orders), once each.

Two input shapes: the table fully loaded before the orders start, and customer updates
interleaved with the orders in timestamp order while both are fed.
"""

from __future__ import annotations

import json
import random
import subprocess
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from eos.testing.helpers import (
    ReadRecord,
    create_topic,
    read_topic,
    unique_name,
    wait_caught_up,
    wait_no_open_transactions,
)
from eos.testing.process import AppProcess

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

APP = str(Path(__file__).resolve().parent / "join_app.py")
PARTITIONS = 3
CUSTOMERS = 24
REGIONS = ("north", "south", "east", "west")
TIERS = ("bronze", "silver", "gold")
STEP_MS = 10
HELD_BACK = 240
"""Events at the end of a feed kept for the crash phases (see _wait_for_the_crash_hook)."""
RELEASE = 10
"""How many of them come per second of a crash phase: a commit or two each, so both phases
get their commits from what is held back."""


@dataclass(frozen=True, slots=True)
class Event:
    """One record to produce: a customer update or an order, at an event time."""

    topic: str  # "customers" or "orders"
    key: str
    value: dict[str, Any]
    timestamp: int

    @property
    def partition(self) -> int:
        return int(self.key[1:]) % PARTITIONS


def events(*, orders: int, updates: int, preload: bool, seed: int) -> list[Event]:
    """Customer updates (``updates`` of them, each customer at least once) and orders,
    in timestamp order. ``preload``: every customer update comes before the first order;
    otherwise they are spread among the orders."""
    rng = random.Random(seed)
    base = time.time_ns() // 1_000_000 - 3_600_000
    kinds = ["customers"] * updates + ["orders"] * orders
    if not preload:
        # The first CUSTOMERS updates lead; the rest are shuffled among the orders.
        rest = kinds[CUSTOMERS:]
        rng.shuffle(rest)
        kinds = kinds[:CUSTOMERS] + rest
    versions: Counter[str] = Counter()
    out: list[Event] = []
    for i, kind in enumerate(kinds):
        ts = base + i * STEP_MS
        if kind == "customers":
            # Every customer's first record leads; later ones update random customers.
            key = f"c{i}" if i < CUSTOMERS else f"c{rng.randrange(CUSTOMERS)}"
            versions[key] += 1
            value: dict[str, Any] = {"tier": rng.choice(TIERS), "v": versions[key]}
        else:
            # A few orders of customers that never exist: a left join keeps them.
            key = f"c{rng.randrange(CUSTOMERS + 2)}"
            value = {"id": f"o{i}", "region": rng.choice(REGIONS)}
        out.append(Event(kind, key, value, ts))
    return out


class Feeder:
    """Produces events in timestamp order, in ``chunks`` chunks over ``seconds``; within a
    chunk the customer updates are delivered before the orders.

    ``held_back`` events at the end are not fed on the clock: :meth:`release` produces
    them a few at a time once the feed is over (still in timestamp order), for a test
    that needs input at a moment of its own; :meth:`join` produces what is left.
    """

    def __init__(
        self,
        bootstrap: str,
        topics: dict[str, str],
        items: Sequence[Event],
        seconds: float,
        held_back: int = 0,
    ) -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self.items = list(items)
        self.fed = self.items[: len(self.items) - held_back]
        self.held = self.items[len(self.fed) :]
        self.seconds = seconds
        self.sent = 0
        self.flowing = True
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _producer(self) -> Producer:
        return Producer(
            {"bootstrap.servers": self.bootstrap, "enable.idempotence": True, "linger.ms": 5}
        )

    def _send(self, producer: Producer, chunk: Sequence[Event]) -> None:
        for kind in ("customers", "orders"):
            for e in chunk:
                if e.topic == kind:
                    producer.produce(
                        self.topics[kind],
                        json.dumps(e.value),
                        e.key,
                        e.partition,
                        timestamp=e.timestamp,
                    )
            if producer.flush(30):
                raise TimeoutError("feeder: records not delivered in 30 s")
        self.sent += len(chunk)

    def _run(self) -> None:
        producer = self._producer()
        chunks = max(1, int(self.seconds * 10))
        per = -(-len(self.fed) // chunks)
        started = time.monotonic()
        try:
            for n, start in enumerate(range(0, len(self.fed), per)):
                delay = started + n * self.seconds / chunks - time.monotonic()
                if delay > 0:
                    time.sleep(delay)  # pacing the load, not synchronizing
                self._send(producer, self.fed[start : start + per])
            self.flowing = False
        except BaseException as exc:  # handed to the test thread
            self.errors.append(exc)

    def start(self) -> Feeder:
        self.thread.start()
        return self

    def release(self, count: int) -> int:
        """Once the feed is over, produce the next ``count`` held-back events; how many."""
        if self.flowing or not self.held:
            return 0
        chunk, self.held = self.held[:count], self.held[count:]
        self._send(self._producer(), chunk)
        return len(chunk)

    def join(self, timeout: float = 120.0) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "feeder did not finish"
        assert not self.errors, self.errors
        self.release(len(self.held))
        assert self.sent == len(self.items)


def expected_joins(
    customers: Sequence[ReadRecord], orders: Sequence[ReadRecord]
) -> dict[str, tuple[str | None, int | None, str]]:
    """``{order id: (tier, version, region)}``: per partition, the topics merged by
    timestamp (customers first on ties), each order joined with the customer record
    current then."""
    by_partition: dict[int, list[tuple[int, int, int, ReadRecord]]] = defaultdict(list)
    for r in customers:
        by_partition[r.partition].append((r.timestamp, 0, r.offset, r))
    for r in orders:
        by_partition[r.partition].append((r.timestamp, 1, r.offset, r))
    result: dict[str, tuple[str | None, int | None, str]] = {}
    for merged in by_partition.values():
        table: dict[bytes, dict[str, Any]] = {}
        for _ts, kind, _offset, r in sorted(merged, key=lambda m: m[:3]):
            assert r.key is not None and r.value is not None
            value = json.loads(r.value)
            if kind == 0:
                table[r.key] = value
            else:
                customer = table.get(r.key)
                result[value["id"]] = (
                    customer["tier"] if customer else None,
                    customer["v"] if customer else None,
                    value["region"],
                )
    return result


def check(run: JoinRun) -> str:
    """Every order joined exactly once with the right customer record; counts exact."""
    customers = read_topic(run.bootstrap, run.topics["customers"])
    orders = read_topic(run.bootstrap, run.topics["orders"])
    expected = expected_joins(customers, orders)
    wait_no_open_transactions(run.bootstrap, run.enriched)
    seen: Counter[str] = Counter()
    wrong: list[tuple[str, Any, Any]] = []
    for r in read_topic(run.bootstrap, run.enriched):
        assert r.value is not None
        value = json.loads(r.value)
        seen[value["id"]] += 1
        want = expected.get(value["id"])
        got = (value["tier"], value["version"], value["region"])
        if want != got:
            wrong.append((value["id"], got, want))
    twice = {i: n for i, n in seen.items() if n > 1}
    missing = sorted(set(expected) - set(seen))
    assert not twice, f"orders joined more than once: {list(twice.items())[:5]}"
    assert not missing, f"{len(missing)} orders never joined, e.g. {missing[:5]}"
    assert not wrong, f"{len(wrong)} orders joined with the wrong customer record: {wrong[:5]}"
    wait_no_open_transactions(run.bootstrap, run.counts)
    per_region: dict[str, list[int]] = defaultdict(list)
    for r in read_topic(run.bootstrap, run.counts):
        assert r.key is not None and r.value is not None
        per_region[r.key.decode()].append(json.loads(r.value)["n"])
    totals = Counter(region for _t, _v, region in expected.values())
    for region, n in totals.items():
        counts = sorted(per_region[region])
        assert counts == list(range(1, n + 1)), (
            f"region {region}: {len(counts)} count updates, from {counts[:1]} to "
            f"{counts[-1:]}, {len(counts) - len(set(counts))} repeated, for {n} orders; "
            f"{_repartitioned(run)[region]} records of the region in the repartition topic"
        )
    assert set(per_region) == set(totals)
    versions = Counter(v for _t, v, _r in expected.values())
    return (
        f"orders={len(expected)} joined once each; customer records={len(customers)}; "
        f"orders with no customer yet={versions[None]}; joined with a later version (>1)="
        f"{sum(n for v, n in versions.items() if v is not None and v > 1)}; "
        f"regions={dict(totals)}"
    )


def _repartitioned(run: JoinRun) -> Counter[str]:
    """Committed records per region in the repartition topic (for a failure message: it
    tells a count that read a record twice from a record written twice)."""
    records = read_topic(run.bootstrap, run.repartition)
    return Counter(r.key.decode() for r in records if r.key is not None)


class JoinRun:
    """The topics, the application id and the child process of one test."""

    def __init__(self, bootstrap: str, tmp_path: Path) -> None:
        self.bootstrap = bootstrap
        self.tmp_path = tmp_path
        self.topics = {
            "customers": create_topic(bootstrap, unique_name("customers"), PARTITIONS),
            "orders": create_topic(bootstrap, unique_name("orders"), PARTITIONS),
        }
        self.enriched = create_topic(bootstrap, unique_name("enriched"), PARTITIONS)
        self.counts = create_topic(bootstrap, unique_name("region-counts"), PARTITIONS)
        self.app_id = unique_name("join")
        self.repartition = f"{self.app_id}-orders-per-region-repartition"

    def app(self, *extra: str) -> AppProcess:
        args = [
            APP,
            "--bootstrap-servers", self.bootstrap,
            "--orders", self.topics["orders"],
            "--customers", self.topics["customers"],
            "--enriched", self.enriched,
            "--counts", self.counts,
            "--application-id", self.app_id,
            "--state-dir", str(self.tmp_path / "state"),
            "--commit-interval-ms", "200",
            *extra,
        ]  # fmt: skip
        return AppProcess(args, log_path=self.tmp_path / "join.log")


def _wait_for_the_crash_hook(crashing: AppProcess, feeder: Feeder, timeout: float = 90) -> int:
    """The exit code of ``crashing``, which dies after its Nth Kafka commit with store
    writes: commits need input, so once the timed feed is over (a slow machine gets there
    first) the held-back events come a few at a time until it has crashed."""
    assert crashing.proc is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return crashing.proc.wait(1.0)
        except subprocess.TimeoutExpired:
            feeder.release(RELEASE)
    return crashing.wait(0.1)  # raises TimeoutExpired, with its threads' stacks in the log


def _kill_while_feeding(run: JoinRun, app: AppProcess, feeder: Feeder, seed: int) -> str:
    """SIGKILL ``app`` at 5 random moments while ``feeder`` feeds and twice right after a
    Kafka commit (before the local store write); then wait until it caught up."""
    rng = random.Random(seed)
    delays: list[float] = []
    try:
        app.start()
        app.wait_for_current_log("eos.engine: assigned", 90)
        feeder.start()
        for number in range(1, 6):
            app.wait_for_current_log("eos.engine: assigned", 90)
            assert app.alive(), app.log_tail()
            delay = rng.uniform(0.3, 1.5)
            time.sleep(delay)  # a random moment to kill at, not a synchronization
            app.kill()
            delays.append(round(delay, 2))
            if number in (2, 4):
                crashing = AppProcess(
                    [*app.args[1:], "--crash-after-kafka-commit", str(rng.randint(2, 5))],
                    log_path=app.log_path,
                )
                crashing.starts = app.starts
                crashing.start()
                code = _wait_for_the_crash_hook(crashing, feeder)
                app.starts = crashing.starts
                assert code == -9, f"exit {code}, expected the crash hook:\n{app.log_tail()}"
            app.start()
        feeder.join()
        # The counts come from the repartition topic, one step behind the orders.
        for topic in [*run.topics.values(), run.repartition]:
            wait_caught_up(run.bootstrap, run.app_id, topic, timeout=120)
        assert app.terminate() == 0, app.log_tail()
    finally:
        app.kill()
    return f"kills={len(delays)} random + 2 after a Kafka commit, delays={delays}"


def test_join_with_a_loaded_table_exact_under_sigkill(bootstrap: str, tmp_path: Path) -> None:
    """The customers table is fully loaded (several versions per customer) before 3,000
    orders arrive; the app is SIGKILLed 7 times mid-stream: every order is joined exactly
    once with its customer's last record, and the per-region counts are exactly 1..N."""
    started = time.monotonic()
    run = JoinRun(bootstrap, tmp_path)
    items = events(orders=3_000, updates=60, preload=True, seed=5)
    preload = [e for e in items if e.topic == "customers"]
    Feeder(bootstrap, run.topics, preload, seconds=0.1).start().join()
    orders = [e for e in items if e.topic == "orders"]
    feeder = Feeder(bootstrap, run.topics, orders, 15.0, held_back=HELD_BACK)
    kills = _kill_while_feeding(run, run.app(), feeder, seed=5)
    print(f"{kills}; {check(run)}; seconds={time.monotonic() - started:.1f}")


def test_join_with_interleaved_updates_exact_under_sigkill(bootstrap: str, tmp_path: Path) -> None:
    """600 customer updates interleaved in timestamp order with 3,000 orders, fed over
    15 s while the app is SIGKILLed 7 times: every order is joined exactly once with the
    customer record current at its timestamp (timestamp order across the two topics),
    and the per-region counts are exactly 1..N."""
    started = time.monotonic()
    run = JoinRun(bootstrap, tmp_path)
    items = events(orders=3_000, updates=600, preload=False, seed=9)
    feeder = Feeder(bootstrap, run.topics, items, seconds=15.0, held_back=HELD_BACK)
    kills = _kill_while_feeding(run, run.app("--max-task-idle-ms", "200"), feeder, seed=9)
    print(f"{kills}; {check(run)}; seconds={time.monotonic() - started:.1f}")
