"""quixstreams contenders (run by run.py with the interpreter of benchmarks/.venv-quix).

``quixstreams``           processing_guarantee="exactly-once", ``value.upper()``
``quixstreams_stateful``  the same, counting per key with its State API (RocksDB)
``quixstreams_windowed``  the same, ``tumbling_window(...).count().final()``: one
                          final count per (key, window), as
                          ``{"start", "end", "n"}`` JSON under the key
``quixstreams_join``      the same, ``orders.join_asof(customers, how="inner")``:
                          each order (``--inputs``) joined with the latest record
                          of its customer (``--table``) at or before the order's
                          timestamp, from quixstreams' own store of the customers
                          (RocksDB, with its changelog topic), as
                          ``{**order, "tier": customer["tier"]}`` JSON

Same inputs, outputs and commit interval as the eos contenders (quixstreams'
``commit_interval`` is in seconds). The windowed contender closes windows by
partition stream time (``final(closing_strategy="partition")``), the rule eos
and Kafka Streams follow (see ``_windowed.py``); quixstreams' default,
``"key"``, closes a key's windows only when that key's own records move on.
Its input is already keyed by the grouping key, so it needs no ``group_by``
(which would repartition), as eos's ``group_by_key()`` needs none.

This file runs in its own virtualenv (quixstreams pins its own
confluent-kafka), so it imports neither eos nor the project's confluent-kafka.
quixstreams stops cleanly on SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from _result import print_result

CONTENDERS = ("quixstreams", "quixstreams_stateful", "quixstreams_windowed", "quixstreams_join")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contender", choices=CONTENDERS, required=True)
    parser.add_argument("--bootstrap-servers", required=True)
    parser.add_argument("--inputs", required=True, help="comma-separated input topics")
    parser.add_argument("--output", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--commit-interval-ms", type=int, default=100)
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--profile", help="write a cProfile of the run here")
    parser.add_argument("--window-ms", type=int, default=60_000, help="windowed: window size")
    parser.add_argument("--grace-ms", type=int, default=0, help="windowed: grace period")
    parser.add_argument(
        "--closing-strategy", choices=("partition", "key"), default="partition",
        help="windowed: final(closing_strategy=...)",
    )  # fmt: skip
    parser.add_argument("--table", help="join: the customers topic")
    parser.add_argument(
        "--consumer-config", action="append", default=[], metavar="KEY=VALUE",
        help="extra librdkafka consumer setting (default: quixstreams' own)",
    )  # fmt: skip
    args = parser.parse_args()

    from quixstreams import Application

    first: list[float] = []

    def on_message_processed(_topic: str, _partition: int, _offset: int) -> None:
        if not first:
            first.append(time.time())

    windowed = args.contender == "quixstreams_windowed"
    join = args.contender == "quixstreams_join"
    app = Application(
        broker_address=args.bootstrap_servers,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        commit_interval=args.commit_interval_ms / 1000,
        # quixstreams checks whether a commit is due only between polls; with its
        # default 1 s poll timeout, the last commit of a burst waits up to 1 s for
        # the poll to time out. The commit interval as poll timeout keeps commits
        # on time, as eos's loop does.
        consumer_poll_timeout=args.commit_interval_ms / 1000,
        processing_guarantee="exactly-once",
        state_dir=args.state_dir,
        loglevel=logging.WARNING,
        consumer_extra_config=dict(kv.split("=", 1) for kv in args.consumer_config) or None,
        # The windowed pipeline has no per-record function of ours to note the first
        # record in; this callback runs once per record too.
        on_message_processed=on_message_processed if windowed else None,
    )
    output = app.topic(
        args.output,
        key_serializer="str" if join else "bytes",
        value_serializer="json" if windowed or join else "bytes",
    )

    def upper(value: bytes) -> bytes:
        if not first:
            first.append(time.time())
        return value.upper()

    def count(value: bytes, state: object) -> bytes:
        if not first:
            first.append(time.time())
        n = state.get("count", 0) + 1  # type: ignore[attr-defined]
        state.set("count", n)  # type: ignore[attr-defined]
        return b"%d" % n

    def joiner(order: dict[str, object], customer: dict[str, object]) -> dict[str, object]:
        if not first:  # the first joined order (the customers reach no joiner)
            first.append(time.time())
        return {**order, "tier": customer["tier"]}

    if join:
        # Keys as str on both sides: quixstreams looks the customer up by the order's key.
        orders = app.dataframe(
            app.topic(args.inputs, key_deserializer="str", value_deserializer="json")
        )
        customers = app.dataframe(
            app.topic(args.table, key_deserializer="str", value_deserializer="json")
        )
        orders.join_asof(customers, how="inner", on_merge=joiner, name="customers").to_topic(output)
    else:
        for name in args.inputs.split(","):
            topic = app.topic(name, key_deserializer="bytes", value_deserializer="bytes")
            sdf = app.dataframe(topic)
            if windowed:
                sdf = (
                    sdf.tumbling_window(duration_ms=args.window_ms, grace_ms=args.grace_ms)
                    .count()
                    .final(closing_strategy=args.closing_strategy)
                    .apply(lambda w: {"start": w["start"], "end": w["end"], "n": w["value"]})
                )
            elif args.contender == "quixstreams_stateful":
                sdf = sdf.apply(count, stateful=True)
            else:
                sdf = sdf.apply(upper)
            sdf.to_topic(output)
    if args.profile:
        import cProfile

        cProfile.runctx("app.run()", globals(), {"app": app}, args.profile)
    else:
        app.run()  # until SIGTERM
    print_result(first[0] if first else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
