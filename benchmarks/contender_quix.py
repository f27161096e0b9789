"""quixstreams contenders (run by run.py with the interpreter of benchmarks/.venv-quix).

``quixstreams``           processing_guarantee="exactly-once", ``value.upper()``
``quixstreams_stateful``  the same, counting per key with its State API (RocksDB)

Same inputs, outputs and commit interval as the eos contenders (quixstreams'
``commit_interval`` is in seconds). This file runs in its own virtualenv
(quixstreams pins its own confluent-kafka), so it imports neither eos nor the
project's confluent-kafka. quixstreams stops cleanly on SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from _result import print_result

CONTENDERS = ("quixstreams", "quixstreams_stateful")


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
    parser.add_argument(
        "--consumer-config", action="append", default=[], metavar="KEY=VALUE",
        help="extra librdkafka consumer setting (default: quixstreams' own)",
    )  # fmt: skip
    args = parser.parse_args()

    from quixstreams import Application

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
    )
    output = app.topic(args.output, key_serializer="bytes", value_serializer="bytes")
    first: list[float] = []

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

    for name in args.inputs.split(","):
        topic = app.topic(name, key_deserializer="bytes", value_deserializer="bytes")
        sdf = app.dataframe(topic)
        if args.contender == "quixstreams_stateful":
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
