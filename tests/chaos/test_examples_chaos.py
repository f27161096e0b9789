"""The examples end to end against the real broker, killed with SIGKILL or stopped with SIGTERM.

Each test runs an example as a child process (``python examples/NAME.py`` or
``python -m eos.cli run ...``) on topics of its own, hurts it, and reads every
result back with a ``read_committed`` consumer: inputs must appear exactly
once in the outputs, and state (balances, counts) must be exact.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import re
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import pytest
from confluent_kafka import ConsumerGroupState, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from eos.testing.helpers import (
    ReadRecord,
    committed_offsets,
    create_topic,
    produce,
    read_topic,
    unique_name,
    wait_caught_up,
    wait_no_open_transactions,
)
from eos.testing.process import AppProcess
from eos.testing.verify import verify_exactly_once

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
PARTITIONS = 4


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"examples_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


bank = _load("bank_transfers")
dead_letter = _load("dead_letter")


# -- helpers ------------------------------------------------------------------


class _Feeder:
    """Produces ``records`` to ``topic`` in 200 chunks spread over ``seconds`` (a thread).

    Small chunks keep a transaction open most of the time, so a kill usually
    leaves one behind for the restart to abort.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        records: Sequence[tuple[str | None, str | None]],
        seconds: float,
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.records = records
        self.seconds = seconds
        self.sent = 0
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        producer = Producer(
            {"bootstrap.servers": self.bootstrap, "enable.idempotence": True, "linger.ms": 5}
        )
        chunks = 200
        per = -(-len(self.records) // chunks)
        started = time.monotonic()
        try:
            for n, start in enumerate(range(0, len(self.records), per)):
                time.sleep(max(0.0, started + n * self.seconds / chunks - time.monotonic()))
                chunk = self.records[start : start + per]
                for key, value in chunk:
                    producer.produce(self.topic, value, key)
                if producer.flush(30):
                    raise TimeoutError("feeder: records not delivered in 30 s")
                self.sent += len(chunk)
        except BaseException as exc:  # handed to the test thread
            self.errors.append(exc)

    def start(self) -> _Feeder:
        self.thread.start()
        return self

    def join(self) -> None:
        self.thread.join(120)
        assert not self.thread.is_alive(), "feeder did not finish"
        assert not self.errors, self.errors
        assert self.sent == len(self.records)


def _current_log(app: AppProcess) -> str:
    text = app.log_path.read_text(errors="replace") if app.log_path.exists() else ""
    return re.split(r"\n=== start \d+ ===\n", text)[-1]


def _wait_assigned(app: AppProcess, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if re.search(r"eos\.engine: assigned \S", _current_log(app)):
            return
        if not app.alive():
            break
        time.sleep(0.05)
    raise TimeoutError(f"no assignment in {app.log_path}:\n{app.log_tail()}")


def _kill_repeatedly(app: AppProcess, kills: int, rng: random.Random) -> list[float]:
    """SIGKILL ``app`` a random 0.3-2 s after each assignment, restarting it each time."""
    delays = []
    for _ in range(kills):
        _wait_assigned(app)
        delay = rng.uniform(0.3, 2.0)
        time.sleep(delay)
        app.kill()
        delays.append(round(delay, 2))
        app.start()
    return delays


def _read(bootstrap: str, topic: str, isolation_level: str = "read_committed") -> list[ReadRecord]:
    """``topic`` read to its end once no transaction is open on it."""
    wait_no_open_transactions(bootstrap, topic)
    return read_topic(bootstrap, topic, isolation_level=isolation_level)


def _wait_consumed(bootstrap: str, group: str, topic: str, timeout: float = 60.0) -> None:
    """Block until ``group`` committed past the last committed record of a transactional topic.

    ``wait_caught_up`` compares with the high watermark, which a topic written
    in transactions never lets a consumer commit up to: its last offset is a
    commit marker, not a record.
    """
    ends: dict[int, int] = {}
    for record in _read(bootstrap, topic):
        ends[record.partition] = record.offset + 1
    deadline = time.monotonic() + timeout
    while True:
        committed = committed_offsets(bootstrap, group, topic)
        if all(committed.get(p, -1) >= end for p, end in ends.items()):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{group} did not consume {topic}: {committed} vs {ends}")
        time.sleep(0.25)


def _tier(key: bytes | None) -> str:
    """The tier :func:`_orders_env` gives customer ``key`` (every third has no record)."""
    i = int((key or b"-0").decode().rsplit("-", 1)[1])
    return "unknown" if i % 3 == 2 else ("gold", "silver")[i % 2]


def _check_orders(bootstrap: str, source: str, sink: str, counts: str) -> tuple[int, int]:
    """Enriched orders (upper-cased, with their customer's tier from the customers table)
    exactly once and per-customer counts exactly 1..N; returns (orders, keys)."""
    inputs = [r for r in read_topic(bootstrap, source) if r.value is not None]
    enriched = {
        r.value: (r.value or b"").upper() + f" tier={_tier(r.key)}".encode() for r in inputs
    }
    verdict = verify_exactly_once(inputs, _read(bootstrap, sink), lambda v: enriched[v or b""])
    truth = Counter(r.key for r in inputs)
    emitted: dict[bytes | None, list[bytes | None]] = defaultdict(list)
    for record in _read(bootstrap, counts):
        emitted[record.key].append(record.value)
    wrong = [
        (key, len(emitted.get(key, [])), n)
        for key, n in truth.items()
        if emitted.get(key) != [str(i).encode() for i in range(1, n + 1)]
    ]
    print(f"orders={verdict.inputs} outputs={verdict.outputs} customers={len(truth)} {verdict}")
    assert verdict.ok, verdict
    assert verdict.outputs == verdict.inputs
    assert not wrong, f"{len(wrong)} customers with wrong counts (key, emitted, true): {wrong[:5]}"
    assert set(emitted) == set(truth)
    return verdict.inputs, len(truth)


def _wait_split(
    bootstrap: str, group: str, topic: str, app: AppProcess, timeout: float = 60.0
) -> list[int]:
    """Block until ``group`` is stable with two members sharing every partition of
    ``topic``; returns how many of them each member owns."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + timeout
    shares: list[int] = []
    while time.monotonic() < deadline and app.alive():
        try:
            desc = admin.describe_consumer_groups([group])[group].result(10)
        except KafkaException:
            desc = None  # the group does not exist yet
        if desc is not None and desc.state == ConsumerGroupState.STABLE:
            shares = sorted(
                sum(tp.topic == topic for tp in m.assignment.topic_partitions) for m in desc.members
            )
            if len(shares) == 2 and min(shares) > 0 and sum(shares) == PARTITIONS:
                return shares
        time.sleep(0.2)
    raise TimeoutError(f"{group} not split over two workers ({shares}):\n{app.log_tail()}")


def _orders(
    count: int, customers: int, seed: int, nulls_every: int = 0
) -> list[tuple[str, str | None]]:
    rng = random.Random(seed)
    return [
        (
            f"customer-{rng.randrange(customers):04d}",
            None if nulls_every and i % nulls_every == 0 else f"order-{i:07d}",
        )
        for i in range(count)
    ]


def _orders_env(bootstrap: str, tmp_path: Path) -> dict[str, str]:
    """The topics of one order_enrichment run; its customers table holds a record for two
    customers in three (``customer-0000`` to ``customer-0999``), produced first."""
    customers = create_topic(bootstrap, unique_name("customers"), PARTITIONS)
    produce(
        bootstrap,
        customers,
        (
            (f"customer-{i:04d}", json.dumps({"tier": _tier(f"c-{i}".encode()), "region": "r"}))
            for i in range(1_000)
            if i % 3 != 2
        ),
    )
    return {
        "EOS_BOOTSTRAP_SERVERS": bootstrap,
        "ORDERS_APPLICATION_ID": unique_name("orders"),
        "ORDERS_INPUT": create_topic(bootstrap, unique_name("orders-in"), PARTITIONS),
        "ORDERS_CUSTOMERS": customers,
        "ORDERS_OUTPUT": create_topic(bootstrap, unique_name("orders-out"), PARTITIONS),
        "ORDERS_COUNTS": create_topic(bootstrap, unique_name("orders-counts"), PARTITIONS),
        "ORDERS_REGION_COUNTS": create_topic(bootstrap, unique_name("per-region"), PARTITIONS),
        "ORDERS_STATE_DIR": str(tmp_path / "state"),
    }


# -- (a) bank_transfers ----------------------------------------------------------


def test_bank_transfers_conserve_money_under_5_sigkills(bootstrap: str, tmp_path: Path) -> None:
    """5,000 transfers between 100 accounts with the bank SIGKILLed 5 times: the total money
    is constant, every balance equals the Python replay, every credit is forwarded once and
    every invalid transfer is dead-lettered once."""
    transfers = create_topic(bootstrap, unique_name("transfers"), PARTITIONS)
    credits = create_topic(bootstrap, unique_name("credits"), PARTITIONS)
    balances = create_topic(bootstrap, unique_name("balances"), PARTITIONS)
    rejected = create_topic(bootstrap, unique_name("rejected"), 1)
    app_id = unique_name("bank")
    args = [
        str(EXAMPLES / "bank_transfers.py"), "run",
        "--bootstrap-servers", bootstrap,
        "--transfers", transfers,
        "--credits", credits,
        "--balances", balances,
        "--rejected", rejected,
        "--application-id", app_id,
        "--state-dir", str(tmp_path / "state"),
    ]  # fmt: skip
    records = bank.random_transfers(100, 5_000, seed=21, invalid_every=100)
    rng = random.Random(21)
    started = time.monotonic()
    app = AppProcess(args, log_path=tmp_path / "bank.log").start()
    try:
        feeder = _Feeder(bootstrap, transfers, records, seconds=12.0).start()
        delays = _kill_repeatedly(app, 5, rng)
        feeder.join()
        wait_caught_up(bootstrap, app_id, transfers, timeout=90)
        _wait_consumed(bootstrap, app_id, credits)
        stopped = time.monotonic()
        assert app.terminate() == 0, app.log_tail()
        stop_seconds = time.monotonic() - stopped
    finally:
        app.kill()
    elapsed = time.monotonic() - started
    audit = bank.verify(bootstrap, transfers, balances, rejected)
    forwarded = Counter(json.loads(r.value)["id"] for r in _read(bootstrap, credits) if r.value)
    aborted = len(_read(bootstrap, balances, "read_uncommitted")) - audit.balance_updates
    print(
        f"bank: {audit}\n  kills=5 at {delays}s after assignment, starts={app.starts}, "
        f"aborted balance updates={aborted}, credits forwarded={len(forwarded)}, "
        f"SIGTERM stop {stop_seconds:.1f}s, total {elapsed:.1f}s"
    )
    assert app.starts == 6
    assert audit.transfers == 5_000 and audit.invalid == 50
    assert audit.total == audit.opening_total == 100 * bank.OPENING_BALANCE
    assert not audit.wrong_accounts, audit
    assert audit.ok, audit
    assert len(forwarded) == audit.valid and set(forwarded.values()) == {1}


# -- (b) the DSL pipeline ---------------------------------------------------------


def test_order_enrichment_dsl_exact_under_3_sigkills(bootstrap: str, tmp_path: Path) -> None:
    """The DSL order-enrichment pipeline SIGKILLed 3 times mid-stream emits every enriched
    order exactly once and every customer's counts exactly 1..N."""
    env = {**_orders_env(bootstrap, tmp_path), "ORDERS_DSL": "1"}
    records = _orders(8_000, 300, seed=5, nulls_every=97)
    rng = random.Random(5)
    started = time.monotonic()
    app = AppProcess(
        [str(EXAMPLES / "order_enrichment.py")], log_path=tmp_path / "dsl.log", env=env
    ).start()
    try:
        feeder = _Feeder(bootstrap, env["ORDERS_INPUT"], records, seconds=10.0).start()
        delays = _kill_repeatedly(app, 3, rng)
        feeder.join()
        wait_caught_up(bootstrap, env["ORDERS_APPLICATION_ID"], env["ORDERS_INPUT"], timeout=90)
        assert app.terminate() == 0, app.log_tail()
    finally:
        app.kill()
    elapsed = time.monotonic() - started
    orders, customers = _check_orders(
        bootstrap, env["ORDERS_INPUT"], env["ORDERS_OUTPUT"], env["ORDERS_COUNTS"]
    )
    aborted = len(_read(bootstrap, env["ORDERS_OUTPUT"], "read_uncommitted")) - orders
    print(
        f"dsl: records={len(records)} (nulls dropped {len(records) - orders}) orders={orders} "
        f"customers={customers} kills=3 at {delays}s after assignment, "
        f"aborted outputs={aborted}, seconds={elapsed:.1f}"
    )
    assert orders == len(records) - len(range(0, len(records), 97))


# -- (c) eos run --workers 2 --------------------------------------------------------


def test_eos_run_two_workers_finish_and_stop_cleanly_on_sigterm(
    bootstrap: str, tmp_path: Path
) -> None:
    """``eos run examples.order_enrichment:app --workers 2`` processes a whole topic exactly
    once and exits 0 soon after SIGTERM."""
    env = _orders_env(bootstrap, tmp_path)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    supervisor = AppProcess(
        ["-m", "eos.cli", "run", "examples.order_enrichment:app", "--workers", "2"],
        log_path=tmp_path / "workers.log",
        env=env,
        cwd=ROOT,
    ).start()
    try:
        split = _wait_split(
            bootstrap, env["ORDERS_APPLICATION_ID"], env["ORDERS_INPUT"], supervisor
        )
        records = _orders(20_000, 500, seed=9)
        started = time.monotonic()
        _Feeder(bootstrap, env["ORDERS_INPUT"], records, seconds=0.0).start().join()
        wait_caught_up(bootstrap, env["ORDERS_APPLICATION_ID"], env["ORDERS_INPUT"], timeout=90)
        processed = time.monotonic() - started
        stopping = time.monotonic()
        code = supervisor.terminate(60)
        stop_seconds = time.monotonic() - stopping
    finally:
        supervisor.kill()
    log = supervisor.log_path.read_text(errors="replace")
    workers = sorted(set(re.findall(r"transactional\.id=(\S+?)\)", log)))
    print(
        f"workers: {workers}, partitions {split}; {len(records)} orders produced and processed "
        f"in {processed:.1f}s; SIGTERM -> exit {code} in {stop_seconds:.2f}s"
    )
    assert code == 0, supervisor.log_tail()
    assert "all workers stopped (exit codes [0, 0])" in log
    assert len(workers) == 2, workers
    orders, _customers = _check_orders(
        bootstrap, env["ORDERS_INPUT"], env["ORDERS_OUTPUT"], env["ORDERS_COUNTS"]
    )
    assert orders == len(records)
    assert stop_seconds < 15


# -- (d) dead_letter --------------------------------------------------------------


def _json_orders(count: int, bad_every: int) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """``count`` orders; every ``bad_every``-th is malformed. Returns records and
    ``{bad value: expected eos.error.type}``."""
    records: list[tuple[str, str]] = []
    bad: dict[str, str] = {}
    for i in range(count):
        key = f"customer-{i % 50:02d}"
        order = {"id": f"o-{i:06d}", "customer": key, "amount": i % 1000 / 10}
        value = json.dumps(order)
        if i % bad_every == bad_every - 1:
            kind = (i // bad_every) % 4
            if kind == 0:
                value, error = value[:-5], "SerializationError"  # truncated JSON
            elif kind == 1:
                del order["customer"]
                value, error = json.dumps(order), "InvalidOrder"
            elif kind == 2:
                order["amount"] = -1
                value, error = json.dumps(order), "InvalidOrder"
            else:
                value, error = json.dumps([order["id"], key]), "InvalidOrder"
            bad[value] = error
        records.append((key, value))
    return records, bad


def test_dead_letter_example_exactly_once_under_2_sigkills(bootstrap: str, tmp_path: Path) -> None:
    """With the dead-letter example SIGKILLed twice, every malformed order is in the DLQ
    exactly once with headers naming its error and input offset, and every good order is in
    the output exactly once."""
    source = create_topic(bootstrap, unique_name("orders-json"), PARTITIONS)
    output = create_topic(bootstrap, unique_name("orders-valid"), PARTITIONS)
    dlq = unique_name("orders-dlq")  # created by the application (1 partition)
    app_id = unique_name("dead-letter")
    args = [
        str(EXAMPLES / "dead_letter.py"), "run",
        "--bootstrap-servers", bootstrap,
        "--input", source,
        "--output", output,
        "--dead-letter", dlq,
        "--application-id", app_id,
    ]  # fmt: skip
    records, bad = _json_orders(4_000, bad_every=10)
    rng = random.Random(13)
    started = time.monotonic()
    app = AppProcess(args, log_path=tmp_path / "dlq.log").start()
    try:
        feeder = _Feeder(bootstrap, source, records, seconds=8.0).start()
        delays = _kill_repeatedly(app, 2, rng)
        feeder.join()
        wait_caught_up(bootstrap, app_id, source, timeout=90)
        assert app.terminate() == 0, app.log_tail()
    finally:
        app.kill()
    elapsed = time.monotonic() - started
    where = {r.value: (r.topic, r.partition, r.offset) for r in read_topic(bootstrap, source)}
    wait_no_open_transactions(bootstrap, dlq)
    letters = dead_letter.read_dead_letters(bootstrap, dlq)
    valid = _read(bootstrap, output)
    good_ids = Counter(json.loads(r.value)["id"] for r in valid if r.value)
    dlq_values = Counter(letter.value for letter in letters)
    aborted = sum(
        len(_read(bootstrap, topic, "read_uncommitted")) - n
        for topic, n in ((output, len(valid)), (dlq, len(letters)))
    )
    print(
        f"dead_letter: orders={len(records)} good={len(good_ids)} dead letters={len(letters)} "
        f"(types {dict(Counter(letter.error_type for letter in letters))}) kills=2 at {delays}s, "
        f"aborted outputs and dead letters={aborted}, seconds={elapsed:.1f}"
    )
    assert len(records) - len(bad) == len(valid) == len(good_ids) == 3_600
    assert set(good_ids.values()) == {1}
    assert dlq_values == Counter(v.encode() for v in bad)
    for letter in letters:
        assert letter.value is not None
        assert letter.error_type == bad[letter.value.decode()]
        assert letter.source == where[letter.value]
        assert letter.headers["eos.application.id"] == app_id
        assert letter.headers["eos.error.message"]
