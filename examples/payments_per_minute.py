"""Payments per merchant per minute, exactly once: one final record per window.

What it shows: a windowed DSL aggregation with a grace period and final
results. Payments arrive keyed by merchant, as JSON values with an integer
``amount`` (cents)::

    key "m-42"   value {"id": "p-1", "amount": 1250}

``group_by_key().windowed_by(eos.TumblingWindows(size_ms=60_000,
grace_ms=5_000))`` puts each payment in the minute of its record timestamp
(event time, not the time it is processed), counts the payments and sums
their amounts per merchant and minute in the window store
``payments-per-minute``, and ``.final()`` sends ONE record per merchant and
minute to the output topic, once the window can no longer change::

    key "m-42"   value {"start": 1700000040000, "end": 1700000100000, "n": 3, "total": 4200}

``start`` is inclusive and ``end`` exclusive (milliseconds). A minute closes
when the partition's stream time (the largest payment timestamp seen on it)
reaches ``end + 5 s``: a payment behind stream time still counts while its
minute is open; one that arrives after its minute closed is dropped and
counted in ``eos_late_records_total``. Values that are not a payment (a
tombstone, no integer ``amount``) are skipped. The final record, the
window's deletion and the input offsets commit in one transaction, so each
minute is emitted exactly once, across crashes and rebalances (docs/time.md).

Run it (the topics must exist; ``produce`` writes sample payments spread over
five minutes, with their event timestamps)::

    export EOS_BOOTSTRAP_SERVERS=127.0.0.1:9092
    python examples/payments_per_minute.py produce
    eos run examples.payments_per_minute:app
    eos run examples.payments_per_minute:builder --config payments.properties

(the properties file needs ``application.id`` and ``bootstrap.servers``; the
input topic comes from the builder, the serdes from its ``stream()`` and
``to()``.)

Settings come from the environment: ``EOS_BOOTSTRAP_SERVERS``,
``PAYMENTS_INPUT`` (default ``payments``), ``PAYMENTS_OUTPUT`` (default
``payments-per-minute``), ``PAYMENTS_APPLICATION_ID`` (default
``payments-per-minute``) and ``PAYMENTS_STATE_DIR`` (default ``./state``).
``python examples/payments_per_minute.py`` runs ``app`` too.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import time
from collections.abc import Iterator
from typing import Any

import eos

INPUT = os.environ.get("PAYMENTS_INPUT", "payments")
OUTPUT = os.environ.get("PAYMENTS_OUTPUT", "payments-per-minute")
STORE = "payments-per-minute"
WINDOWS = eos.TumblingWindows(size_ms=60_000, grace_ms=5_000)

Totals = dict[str, int]
"""A window's aggregate: ``{"n": payments, "total": amount in cents}``."""


def is_payment(_merchant: str, payment: Any) -> bool:
    """A JSON object with an integer ``amount`` (not a tombstone, not a bool)."""
    return (
        isinstance(payment, dict)
        and type(payment.get("amount")) is int  # bool is an int subclass: not an amount
    )


def no_payments() -> Totals:
    """The aggregate of a new window."""
    return {"n": 0, "total": 0}


def add_payment(_merchant: str, payment: Any, totals: Totals) -> Totals:
    """One more payment in the window."""
    return {"n": totals["n"] + 1, "total": totals["total"] + payment["amount"]}


def window_record(window: eos.Windowed[str], totals: Totals) -> tuple[str, dict[str, int]]:
    """The output record of a closed window: keyed by merchant, its bounds and totals."""
    return window.key, {
        "start": window.start,
        "end": window.end,
        "n": totals["n"],
        "total": totals["total"],
    }


def build(payments: str = INPUT, output: str = OUTPUT) -> eos.StreamBuilder:
    """Payments (string keys, JSON values) in; one JSON record per merchant and minute out."""
    builder = eos.StreamBuilder()
    per_minute = (
        builder.stream(payments, key_serde="string", value_serde="json")
        .filter(is_payment)
        .group_by_key()
        .windowed_by(WINDOWS)
        .aggregate(no_payments, add_payment, store=STORE)
        .final()
    )
    per_minute.to_stream().map(window_record).to(output, key_serde="string", value_serde="json")
    return builder


def application(builder: eos.StreamBuilder) -> eos.Application:
    """The application running ``builder`` (its input topic: the builder's)."""
    return eos.Application(
        application_id=os.environ.get("PAYMENTS_APPLICATION_ID", "payments-per-minute"),
        bootstrap_servers=os.environ.get("EOS_BOOTSTRAP_SERVERS", "localhost:9092"),
        processor=builder.build(),
        key_serde="string",
        value_serde="json",
        state_dir=os.environ.get("PAYMENTS_STATE_DIR", "./state"),
    )


builder = build()
app = application(builder)


def sample_payments(
    start_ms: int, minutes: int = 5, merchants: int = 4, seed: int = 7
) -> Iterator[tuple[str, dict[str, object], int]]:
    """``(merchant, payment, timestamp_ms)`` in time order: one payment every 2.5 s for
    ``minutes`` minutes from ``start_ms``, then one more per merchant 70 s after the
    last minute's end. Stream time is per partition: those last payments move it past
    ``end + grace`` in every partition that holds a merchant, so every sampled minute
    closes (the last payments' own minute stays open until later payments arrive)."""
    rng = random.Random(seed)
    end = start_ms + minutes * 60_000
    n = 0
    for t in range(start_ms, end, 2_500):
        n += 1
        merchant = f"m-{rng.randrange(merchants)}"
        yield merchant, {"id": f"p-{n}", "amount": rng.randrange(100, 10_000)}, t
    for m in range(merchants):
        n += 1
        yield f"m-{m}", {"id": f"p-{n}", "amount": 100}, end + 70_000


def produce_sample(bootstrap_servers: str, topic: str) -> int:
    """Produce :func:`sample_payments` to ``topic`` with their timestamps; return the count."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap_servers, "enable.idempotence": True})
    start = (time.time_ns() // 60_000_000_000 - 10) * 60_000  # ten minutes ago, on a minute
    count = 0
    for merchant, payment, timestamp in sample_payments(start):
        producer.produce(topic, json.dumps(payment).encode(), merchant, timestamp=timestamp)
        count += 1
    if producer.flush(30) != 0:
        raise RuntimeError(f"payments not delivered to {topic} within 30 s")
    return count


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", nargs="?", default="run", choices=["run", "produce"])
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"
    )
    if args.command == "produce":
        bootstrap = os.environ.get("EOS_BOOTSTRAP_SERVERS", "localhost:9092")
        print(f"{produce_sample(bootstrap, INPUT)} payments produced to {INPUT}")
        return
    app.run()


if __name__ == "__main__":
    main()
