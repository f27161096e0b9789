"""An async processor under SIGKILL: exactly once and in per-key order, with calls in flight.

tests/chaos/async_app.py runs examples/async_enrichment.py's enrichment in a child process
against the real broker: each order is merged with its customer's record fetched over
real HTTP from the example's customer service, whose answers take 1-20 ms at random, up
to 50 records in flight at once. The app is SIGKILLed again and again while orders flow,
each time once it has finished some lookups in its current start (so records are in
flight and a transaction is usually open), and restarted.

Every input value carries its key's sequence number. The outputs, read back with a
``read_committed`` consumer, must hold every input exactly once, enriched with its own
customer's record, and each key's outputs in input order (sequence numbers 0, 1, 2, ...
in offset order): the per-key chains must hold across concurrent calls, aborts and
replays.
"""

from __future__ import annotations

import importlib.util
import json
import random
import re
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from chaosapps import wait_owned
from confluent_kafka import Producer

from eos.testing.helpers import (
    create_topic,
    read_topic,
    unique_name,
    wait_caught_up,
    wait_no_open_transactions,
)
from eos.testing.process import AppProcess

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

ROOT = Path(__file__).resolve().parents[2]
APP = str(Path(__file__).resolve().parent / "async_app.py")
PARTITIONS = 2
KEYS = 64
HOT_KEYS = 6
"""Half the orders go to the first ``HOT_KEYS`` keys (long per-key chains), the rest are
spread over the others (more keys than ``max_in_flight``: admission is the limit)."""
SESSION_MS = "6000"

_LOOKUPS = re.compile(r"async_app: (\d+) lookups done \(at most (\d+) at once\)")
MAX_IN_FLIGHT = 50
PROGRESS_EVERY = 50
"""async_app.py logs every this many lookups done."""


def _load_example() -> ModuleType:
    path = ROOT / "examples" / "async_enrichment.py"
    spec = importlib.util.spec_from_file_location("examples_async_enrichment", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


example = _load_example()


class Feeder:
    """Produces orders at ``rate`` per second, in 10 chunks a second, from ``stop()`` on
    until ``minimum`` are produced (or ``maximum``, whichever comes first).

    Order ``i`` goes to a random key ``k<j>`` (partition ``j % PARTITIONS``; half of them
    to one of the ``HOT_KEYS`` first keys) with value
    ``{"order": "o-<i>", "customer": "k<j>", "seq": <the key's sequence number>}``.
    """

    def __init__(
        self, bootstrap: str, topic: str, *, rate: int, minimum: int, maximum: int, seed: int
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.rate = rate
        self.minimum = minimum
        self.maximum = maximum
        self.rng = random.Random(seed)
        self.sent = 0
        self.flowing = True
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        producer = Producer(
            {"bootstrap.servers": self.bootstrap, "enable.idempotence": True, "linger.ms": 5}
        )
        seq: Counter[str] = Counter()
        per_chunk = max(1, self.rate // 10)
        started = time.monotonic()
        try:
            chunk = 0
            while self.sent < self.maximum and not (
                self._stop.is_set() and self.sent >= self.minimum
            ):
                delay = started + chunk / 10 - time.monotonic()
                if delay > 0:
                    time.sleep(delay)  # pacing the load, not synchronizing
                for _ in range(min(per_chunk, self.maximum - self.sent)):
                    hot = self.rng.random() < 0.5
                    j = self.rng.randrange(HOT_KEYS) if hot else self.rng.randrange(HOT_KEYS, KEYS)
                    key = f"k{j:02d}"
                    value = {"order": f"o-{self.sent:06d}", "customer": key, "seq": seq[key]}
                    producer.produce(self.topic, json.dumps(value), key, j % PARTITIONS)
                    seq[key] += 1
                    self.sent += 1
                if producer.flush(30):
                    raise TimeoutError("feeder: records not delivered in 30 s")
                chunk += 1
        except BaseException as exc:  # handed to the test thread
            self.errors.append(exc)
        finally:
            self.flowing = False

    def start(self) -> Feeder:
        self.thread.start()
        return self

    def stop(self) -> None:
        """Finish once ``minimum`` orders are produced."""
        self._stop.set()

    def join(self, timeout: float = 120.0) -> int:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "feeder did not finish"
        assert not self.errors, self.errors
        return self.sent


def check(bootstrap: str, source: str, sink: str) -> str:
    """Every order in ``sink`` exactly once, enriched with its customer's record, with its
    key, and per key in input order."""
    inputs = read_topic(bootstrap, source)
    wait_no_open_transactions(bootstrap, sink)
    outputs = read_topic(bootstrap, sink)
    expected: dict[str, tuple[bytes | None, dict[str, Any]]] = {}
    records_per_key: Counter[str] = Counter()
    customers: dict[str, dict[str, Any]] = {}
    for r in inputs:
        assert r.key is not None and r.value is not None
        order = json.loads(r.value)
        who = order["customer"]
        if who not in customers:
            customers[who] = example.customer(who)
        expected[order["order"]] = (r.key, {**order, **customers[who]})
        records_per_key[r.key.decode()] += 1
    seen: Counter[str] = Counter()
    wrong: list[tuple[str, Any, Any]] = []
    seqs: dict[str, list[int]] = defaultdict(list)
    partitions: dict[str, set[int]] = defaultdict(set)
    for r in outputs:  # in (partition, offset) order
        assert r.value is not None
        value = json.loads(r.value)
        order_id = value.get("order")
        seen[order_id] += 1
        want = expected.get(order_id)
        if want is None or want != (r.key, value):
            wrong.append((order_id, (r.key, value), want))
        if r.key is not None:
            seqs[r.key.decode()].append(value.get("seq"))
            partitions[r.key.decode()].add(r.partition)
    twice = {i: n for i, n in seen.items() if n > 1}
    missing = sorted(set(expected) - set(seen))
    assert not twice, f"{len(twice)} orders sent more than once, e.g. {list(twice.items())[:5]}"
    assert not missing, f"{len(missing)} orders never sent, e.g. {missing[:5]}"
    assert not wrong, f"{len(wrong)} outputs with a wrong key or value, e.g. {wrong[:3]}"
    unordered: dict[str, str] = {}
    for key, got in seqs.items():
        if len(partitions[key]) != 1:
            unordered[key] = f"in partitions {sorted(partitions[key])}"
        elif got != list(range(records_per_key[key])):
            at = next((i for i, seq in enumerate(got) if seq != i), len(got))
            unordered[key] = f"seq {got[max(0, at - 2) : at + 4]} at its output {at}"
    assert not unordered, (
        f"{len(unordered)} keys with outputs out of input order, e.g. {list(unordered.items())[:5]}"
    )
    return f"orders={len(inputs)} keys={len(records_per_key)} each once, in per-key order"


class AsyncRun:
    """The topics, the application id and the child processes of one test."""

    def __init__(self, bootstrap: str, tmp_path: Path) -> None:
        self.bootstrap = bootstrap
        self.tmp_path = tmp_path
        self.source = create_topic(bootstrap, unique_name("async-orders"), PARTITIONS)
        self.sink = create_topic(bootstrap, unique_name("async-enriched"), PARTITIONS)
        self.app_id = unique_name("async-enrich")
        self.apps: list[AppProcess] = []

    def app(self, instance: str = "0", *extra: str) -> AppProcess:
        """An unstarted async_app.py: 50 in flight, HTTP calls of 1-20 ms."""
        args = [
            APP,
            "--bootstrap-servers", self.bootstrap,
            "--input", self.source,
            "--output", self.sink,
            "--application-id", self.app_id,
            "--instance-id", instance,
            "--max-in-flight", str(MAX_IN_FLIGHT),
            "--latency-ms", "1-20",
            "--progress-every", str(PROGRESS_EVERY),
            *extra,
        ]  # fmt: skip
        app = AppProcess(args, log_path=self.tmp_path / f"async-{instance}.log")
        self.apps.append(app)
        return app

    def feeder(self, seed: int) -> Feeder:
        """Orders at 250/s until stopped, at least 2,500, at most 9,000."""
        return Feeder(
            self.bootstrap, self.source, rate=250, minimum=2_500, maximum=9_000, seed=seed
        )

    def finish(self, feeder: Feeder, apps: list[AppProcess]) -> int:
        """End the feed, wait until the group caught up, SIGTERM the apps (exit 0 each);
        return the orders fed."""
        feeder.stop()
        sent = feeder.join()
        wait_caught_up(self.bootstrap, self.app_id, self.source, timeout=90)
        for app in apps:
            assert app.terminate() == 0, app.log_tail()
        return sent

    def check(self) -> str:
        return check(self.bootstrap, self.source, self.sink)

    def aborted_outputs(self) -> int:
        """Records of the output in aborted transactions (what the kills cut short)."""
        wait_no_open_transactions(self.bootstrap, self.sink)
        everything = read_topic(self.bootstrap, self.sink, isolation_level="read_uncommitted")
        return len(everything) - len(read_topic(self.bootstrap, self.sink))

    def kill_all(self) -> None:
        for app in self.apps:
            app.kill()


def _lookups(app: AppProcess) -> int:
    """How many lookups the current start of ``app`` has finished (by its progress log)."""
    found = _LOOKUPS.findall(app.current_log())
    return int(found[-1][0]) if found else 0


def _peak_in_flight(apps: list[AppProcess]) -> int:
    """The most lookups any start of ``apps`` had in flight at once; at most
    ``MAX_IN_FLIGHT``, and well above 1 (records of different keys overlapped)."""
    peaks = [
        int(peak)
        for app in apps
        for _done, peak in _LOOKUPS.findall(app.log_path.read_text(errors="replace"))
    ]
    peak = max(peaks, default=0)
    assert 10 <= peak <= MAX_IN_FLIGHT, f"at most {peak} lookups in flight at once"
    return peak


def _wait_lookups(app: AppProcess, at_least: int, timeout: float = 90.0) -> None:
    """Block until the current start of ``app`` has finished ``at_least`` lookups."""
    deadline = time.monotonic() + timeout
    while _lookups(app) < at_least:
        assert app.alive(), f"{app.log_path} exited:\n{app.log_tail()}"
        if time.monotonic() > deadline:
            raise TimeoutError(f"{at_least} lookups not done in {timeout}s:\n{app.log_tail()}")
        time.sleep(0.05)


def _kill_while_feeding(run: AsyncRun, app: AppProcess, kills: int, seed: int) -> str:
    """Feed orders; SIGKILL ``app`` ``kills`` times, each once its current start has
    finished a random number (100-500) of lookups, and restart it; then end the feed,
    wait until the app caught up and stop it with SIGTERM."""
    rng = random.Random(seed)
    feeder = run.feeder(seed)
    thresholds: list[int] = []
    flowing = 0
    try:
        app.start()
        app.wait_for_current_log("eos.engine: assigned", 90)
        feeder.start()
        for _ in range(kills):
            done = rng.randrange(100, 501, PROGRESS_EVERY)
            _wait_lookups(app, done)
            flowing += feeder.flowing
            app.kill()
            thresholds.append(done)
            app.start()
        sent = run.finish(feeder, [app])
    finally:
        run.kill_all()
        feeder.stop()
    assert flowing == kills, f"only {flowing} of {kills} kills came while orders flowed"
    return (
        f"orders fed={sent}; kills={kills} after {thresholds} lookups of a start, all while "
        f"feeding; outputs of aborted transactions={run.aborted_outputs()}"
    )


def test_async_processor_exactly_once_in_key_order_under_sigkill(
    bootstrap: str, tmp_path: Path
) -> None:
    """At least 2,500 orders (64 keys, a few hot, 2 partitions) enriched by the
    AsyncProcessor with HTTP calls of 1-20 ms, up to 50 in flight, SIGKILLed 6 times while
    orders flow: every order is in the output exactly once, enriched with its own
    customer's record, and each key's outputs are in input order."""
    started = time.monotonic()
    run = AsyncRun(bootstrap, tmp_path)
    kills = _kill_while_feeding(run, run.app(), kills=6, seed=15)
    checked = run.check()
    peak = _peak_in_flight(run.apps)
    print(
        f"{kills}; {checked}; at most {peak} lookups in flight at once; "
        f"seconds={time.monotonic() - started:.1f}"
    )


def test_map_values_async_exactly_once_in_key_order_under_sigkill(
    bootstrap: str, tmp_path: Path
) -> None:
    """The same with the DSL's ``map_values_async`` (an async processor compiled from a
    builder), SIGKILLed 4 times while orders flow."""
    started = time.monotonic()
    run = AsyncRun(bootstrap, tmp_path)
    kills = _kill_while_feeding(run, run.app("0", "--dsl"), kills=4, seed=16)
    checked = run.check()
    peak = _peak_in_flight(run.apps)
    print(
        f"{kills}; {checked}; at most {peak} lookups in flight at once; "
        f"seconds={time.monotonic() - started:.1f}"
    )


def test_partitions_move_with_records_in_flight_exactly_once_in_key_order(
    bootstrap: str, tmp_path: Path
) -> None:
    """Two instances share the 2 partitions while orders flow. Twice, instance 1 is
    SIGKILLed with records in flight; instance 0 takes its partition when its session
    times out (a rebalance: instance 0's own records in flight settle before its
    partitions are revoked) and gives one back when instance 1 restarts. Every order is in
    the output exactly once, enriched, and each key's outputs are in input order."""
    started = time.monotonic()
    run = AsyncRun(bootstrap, tmp_path)
    flags = ("--session-timeout-ms", SESSION_MS)
    w0, w1 = run.app("0", *flags), run.app("1", *flags)
    feeder = run.feeder(seed=17)
    everything = set(range(PARTITIONS))
    handovers: list[float] = []
    flowing = 0
    try:
        w0.start()
        w1.start()
        for app in (w0, w1):
            wait_owned(app, bool, "an assignment")
        feeder.start()
        for _ in range(2):
            wait_owned(w1, bool, "instance 1's assignment")
            _wait_lookups(w1, 100)
            flowing += feeder.flowing
            w1.kill()
            handovers.append(
                round(wait_owned(w0, lambda ps: ps == everything, "instance 0 owning all"), 1)
            )
            w1.start()
            wait_owned(w1, bool, "the restarted instance 1's assignment")
            wait_owned(w0, lambda ps: ps != everything, "instance 0 giving a partition back")
        sent = run.finish(feeder, [w0, w1])
    finally:
        run.kill_all()
        feeder.stop()
    assert flowing == 2, "the feed ended before a kill: slow machine?"
    checked = run.check()
    peak = _peak_in_flight(run.apps)
    revocations = w0.log_path.read_text(errors="replace").count("eos.engine: revoking")
    print(
        f"orders fed={sent}; instance 1 killed twice, handovers took {handovers}s; "
        f"revocations in instance 0={revocations}; outputs of aborted transactions="
        f"{run.aborted_outputs()}; {checked}; at most {peak} lookups in flight at once; "
        f"seconds={time.monotonic() - started:.1f}"
    )
