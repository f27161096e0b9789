"""A JSON pipeline whose malformed records go to a dead-letter topic, exactly once.

What it shows: ``processing_error_policy="dead_letter"``. The application
reads JSON orders (``value_serde="json"``), validates them and writes each
valid one, with its amount in cents added, to ``output``. A record that
cannot be processed does not stop the pipeline and is not silently dropped:
its original bytes go to the dead-letter topic, in the same transaction as
its input offset, with headers saying what went wrong:

==========================  ==============================================
``eos.error.type``          ``SerializationError`` (the value is not JSON)
                            or the exception ``process()`` raised
                            (``InvalidOrder`` here)
``eos.error.message``       the exception's message
``eos.source.topic``        where the record came from
``eos.source.partition``
``eos.source.offset``
``eos.application.id``      which application dead-lettered it
==========================  ==============================================

An order must be a JSON object with ``id`` and ``customer`` (non-empty
strings) and ``amount`` (a number >= 0); anything else raises
``InvalidOrder`` in ``process()``. Records that are not JSON at all fail
earlier, in the value serde. Either way nothing of the failed record reaches
``output`` (the engine aborts and replays if it had already sent something).

Run it (creates the input and output topics if missing; eos creates the
dead-letter topic; runs until Ctrl-C or SIGTERM)::

    EOS_BOOTSTRAP_SERVERS=127.0.0.1:9092 python examples/dead_letter.py run \
        --input orders-json --output orders-valid --dead-letter orders-dlq

or, on fresh topics, feed a few good and bad orders, process them, print the
dead-letter records with their headers, and exit::

    EOS_BOOTSTRAP_SERVERS=127.0.0.1:9092 python examples/dead_letter.py
"""

from __future__ import annotations

import argparse
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

import eos
from eos.testing.helpers import produce, read_topic, unique_name


class InvalidOrder(ValueError):
    """An order that is valid JSON but not a valid order; it is dead-lettered."""


def validate(order: object) -> dict[str, object]:
    """The valid order with ``amount_cents`` added.

    Raises:
        InvalidOrder: ``order`` is not an object with ``id``, ``customer`` and ``amount``.
    """
    if not isinstance(order, dict):
        raise InvalidOrder(f"an order is a JSON object, got {type(order).__name__}")
    missing = [f for f in ("id", "customer", "amount") if f not in order]
    if missing:
        raise InvalidOrder(f"missing required field(s) {missing}")
    for name in ("id", "customer"):
        if not isinstance(order[name], str) or not order[name]:
            raise InvalidOrder(f"{name} must be a non-empty string, got {order[name]!r}")
    amount = order["amount"]
    if isinstance(amount, bool) or not isinstance(amount, (int, float)) or amount < 0:
        raise InvalidOrder(f"amount must be a number >= 0, got {amount!r}")
    return {
        "id": order["id"],
        "customer": order["customer"],
        "amount": amount,
        "amount_cents": round(amount * 100),
    }


class ValidateOrders(eos.Processor):
    """Sends each valid order to ``output``; raises ``InvalidOrder`` for the others."""

    def __init__(self, output: str) -> None:
        self.output = output

    def process(self, record: eos.Record, ctx: eos.Context) -> None:
        ctx.send(self.output, key=record.key, value=validate(record.value))


def application(
    *,
    bootstrap_servers: str,
    input_topic: str = "orders-json",
    output: str = "orders-valid",
    dead_letter: str = "orders-dlq",
    application_id: str = "dead-letter-example",
    instance_id: str = "0",
) -> eos.Application:
    """The validating pipeline; failing records go to ``dead_letter``."""
    return eos.Application(
        application_id=application_id,
        bootstrap_servers=bootstrap_servers,
        input_topics=[input_topic],
        processor=ValidateOrders(output),
        instance_id=instance_id,
        key_serde="string",
        value_serde="json",
        processing_error_policy="dead_letter",
        dead_letter_topic=dead_letter,
    )


@dataclass(frozen=True)
class DeadLetter:
    """One dead-letter record: the original key and value bytes and the ``eos.*`` headers."""

    key: bytes | None
    value: bytes | None
    headers: dict[str, str]

    @property
    def error_type(self) -> str:
        return self.headers.get("eos.error.type", "")

    @property
    def source(self) -> tuple[str, int, int]:
        """``(topic, partition, offset)`` of the input record."""
        h = self.headers
        return (h["eos.source.topic"], int(h["eos.source.partition"]), int(h["eos.source.offset"]))


def read_dead_letters(bootstrap_servers: str, topic: str) -> list[DeadLetter]:
    """Every committed record of the dead-letter topic (read_committed), with its headers."""
    return [
        DeadLetter(
            r.key,
            r.value,
            {name: (v or b"").decode("utf-8", "replace") for name, v in r.headers},
        )
        for r in read_topic(bootstrap_servers, topic)
    ]


SAMPLES: list[tuple[str | None, str | None]] = [
    ("alice", '{"id": "o-1", "customer": "alice", "amount": 12.5}'),
    ("bob", '{"id": "o-2", "customer": "bob", "amount": 3}'),
    ("bob", '{"id": "o-3", "customer": "bob", "amount": 7.25'),  # truncated: not JSON
    ("carol", '{"id": "o-4", "amount": 9}'),  # no customer
    ("dave", "just some text"),  # not JSON
    ("erin", '{"id": "o-6", "customer": "erin", "amount": -1}'),  # negative
    ("frank", '["o-7", "frank", 1]'),  # JSON, not an object
    ("alice", '{"id": "o-8", "customer": "alice", "amount": 0.99}'),
]


def ensure_topics(bootstrap_servers: str, topics: Sequence[str], partitions: int) -> None:
    """Create the topics that do not exist yet, each with ``partitions`` partitions."""
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    futures = admin.create_topics([NewTopic(t, partitions, 1) for t in topics])
    for future in futures.values():
        try:
            future.result(30)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise


def demo(bootstrap_servers: str) -> list[DeadLetter]:
    """Process ``SAMPLES`` on fresh topics; print and return the dead-letter records."""
    source, output, dlq = (unique_name(p) for p in ("orders-json", "orders-valid", "orders-dlq"))
    ensure_topics(bootstrap_servers, [source, output], 2)
    produce(bootstrap_servers, source, SAMPLES)
    app = application(
        bootstrap_servers=bootstrap_servers,
        input_topic=source,
        output=output,
        dead_letter=dlq,
        application_id=unique_name("dead-letter"),
    )
    runner = threading.Thread(target=app.run, daemon=True)
    runner.start()
    try:
        deadline = time.monotonic() + 60
        while app.state.processed_count < len(SAMPLES):
            if time.monotonic() > deadline or not runner.is_alive():
                raise RuntimeError(f"{app.state.processed_count}/{len(SAMPLES)} processed")
            time.sleep(0.2)
    finally:
        app.stop()  # commits what was processed
        runner.join(60)
    valid = read_topic(bootstrap_servers, output)
    letters = read_dead_letters(bootstrap_servers, dlq)
    print(f"{len(SAMPLES)} orders in: {len(valid)} valid on {output}, {len(letters)} on {dlq}")
    for record in valid:
        print(f"  valid  {record.key!r}: {record.value!r}")
    for letter in letters:
        print(f"  dead   {letter.key!r}: {letter.value!r}")
        for name, value in letter.headers.items():
            print(f"           {name}: {value}")
    return letters


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", nargs="?", default="demo", choices=["demo", "run"])
    parser.add_argument(
        "--bootstrap-servers", default=os.environ.get("EOS_BOOTSTRAP_SERVERS", "localhost:9092")
    )
    parser.add_argument("--input", default="orders-json")
    parser.add_argument("--output", default="orders-valid")
    parser.add_argument("--dead-letter", default="orders-dlq")
    parser.add_argument("--application-id", default="dead-letter-example")
    parser.add_argument("--instance-id", default="0")
    parser.add_argument("--partitions", type=int, default=4, help="for topics it creates")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.command == "run" else logging.ERROR,
        format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s",
    )
    if args.command == "demo":
        demo(args.bootstrap_servers)
        return
    ensure_topics(args.bootstrap_servers, [args.input, args.output], args.partitions)
    application(
        bootstrap_servers=args.bootstrap_servers,
        input_topic=args.input,
        output=args.output,
        dead_letter=args.dead_letter,
        application_id=args.application_id,
        instance_id=args.instance_id,
    ).run()


if __name__ == "__main__":
    main()
