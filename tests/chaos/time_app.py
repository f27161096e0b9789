"""The applications of the time chaos tests (tests/chaos/test_time_chaos.py), run as children.

    python tests/chaos/time_app.py windows --bootstrap-servers ... --input ... --output ...
        --dead-letter ... --application-id ... --instance-id ... --state-dir ...
    python tests/chaos/time_app.py timers  --bootstrap-servers ... --input ... --output ...
        --application-id ... --instance-id ... --state-dir ...

Either takes ``--crash-after-kafka-commit N``: the process SIGKILLs itself on its N-th
commit with store writes, after the Kafka commit and before the local store write
(eos.testing.faults.CrashAfterKafkaCommit), where a random SIGKILL rarely lands.

``windows``: the DSL counts records per key in tumbling windows (RocksDB window
store) and sends each window's ``.final()`` count, keyed by the record key, as
``{"start", "end", "n"}``. Late records go to the dead-letter topic.

``timers``: :class:`FirstPlusDelay`. Input values are JSON objects. A value
with a ``"wall"`` field schedules a wall-clock timer at that time for the
record's key; any other record counts its key in the RocksDB store ``seen``,
and the first record of a key (since its last timer) schedules a stream-time
timer at its timestamp + ``--delay-ms``. A stream-time timer sends the key's
count and forgets it; a wall-clock timer sends when it ran.
"""

from __future__ import annotations

import argparse
import logging
import time
from typing import Any

import eos
from eos.testing.faults import CrashAfterKafkaCommit

WINDOW_STORE = "window-counts"
SEEN_STORE = "seen"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class FirstPlusDelay(eos.Processor[str, dict[str, Any]]):
    """Per key, a stream-time timer ``delay_ms`` after its first record; wall-clock timers
    for records that ask for one. See the module docstring.

    Args:
        output: The output topic.
        delay_ms: How far after a key's first record its stream-time timer is due.
    """

    def __init__(self, output: str, delay_ms: int) -> None:
        self.output = output
        self.delay_ms = delay_ms
        self.seen: eos.Store[str, int] = eos.Store(
            SEEN_STORE, key_serde="string", value_serde="json"
        )
        self.stores = [self.seen]

    def process(
        self, record: eos.Record[str, dict[str, Any]], ctx: eos.Context[str, dict[str, Any]]
    ) -> None:
        wall = record.value.get("wall")
        if wall is not None:
            ctx.timers.schedule(record.key, int(wall), kind="wall_clock")
            return
        seen = ctx.store(self.seen)
        n = seen.get(record.key, 0)
        if n == 0:
            ctx.timers.schedule(record.key, record.timestamp + self.delay_ms)
        seen[record.key] = n + 1

    def on_timer(self, key: Any, timestamp: int, ctx: eos.Context[str, dict[str, Any]]) -> None:
        if str(key).startswith("wall:"):
            value = {"kind": "wall", "timer": timestamp, "fired_at": now_ms()}
        else:
            seen = ctx.store(self.seen)
            n = seen[key]  # a KeyError (a timer without its count) stops the app: a bug
            del seen[key]
            value = {"kind": "stream", "timer": timestamp, "n": n, "stream_time": ctx.stream_time}
        ctx.send(self.output, value, key=key)


def windows_processor(args: argparse.Namespace) -> eos.Processor:
    builder = eos.StreamBuilder()
    (
        builder.stream(args.input)
        .group_by_key()
        .windowed_by(eos.TumblingWindows(size_ms=args.size_ms, grace_ms=args.grace_ms))
        .count(store=WINDOW_STORE)
        .final()
        .to_stream()
        .map(lambda w, n: (w.key, {"start": w.start, "end": w.end, "n": n}))
        .to(args.output)
    )
    return builder.build()


def build_app(argv: list[str] | None = None, **extra: object) -> eos.Application:
    """The application the command line describes; ``extra`` are further
    ``eos.Application`` keywords."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["windows", "timers"])
    parser.add_argument("--bootstrap-servers", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--dead-letter", default=None)
    parser.add_argument("--application-id", required=True)
    parser.add_argument("--instance-id", default="0")
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--size-ms", type=int, default=10_000)
    parser.add_argument("--grace-ms", type=int, default=2_000)
    parser.add_argument("--delay-ms", type=int, default=5_000)
    parser.add_argument("--session-timeout-ms", type=int, default=None)
    parser.add_argument("--commit-interval-ms", type=int, default=100)
    parser.add_argument("--max-batch-records", type=int, default=2_000)
    parser.add_argument("--transaction-timeout-ms", type=int, default=10_000)
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--crash-after-kafka-commit", type=int, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s",
    )
    consumer_config: dict[str, str | int] = {}
    if args.session_timeout_ms:
        consumer_config["session.timeout.ms"] = args.session_timeout_ms
        consumer_config["heartbeat.interval.ms"] = max(100, args.session_timeout_ms // 5)
    options: dict[str, Any] = {}
    if args.mode == "windows":
        processor = windows_processor(args)
        options = {
            "late_record_policy": "dead_letter",
            "processing_error_policy": "dead_letter",
            "dead_letter_topic": args.dead_letter,
        }
    else:
        processor = FirstPlusDelay(args.output, args.delay_ms)
        options = {"input_topics": [args.input]}
    if args.crash_after_kafka_commit is not None:
        options["faults"] = CrashAfterKafkaCommit(args.crash_after_kafka_commit)
    return eos.Application(
        application_id=args.application_id,
        bootstrap_servers=args.bootstrap_servers,
        processor=processor,
        instance_id=args.instance_id,
        key_serde="string",
        value_serde="json",
        state_dir=args.state_dir,
        commit_interval_ms=args.commit_interval_ms,
        max_batch_records=args.max_batch_records,
        transaction_timeout_ms=args.transaction_timeout_ms,
        consumer_config=consumer_config,
        **options,
        **extra,  # type: ignore[arg-type]
    )


def main(argv: list[str] | None = None) -> None:
    build_app(argv).run()


if __name__ == "__main__":
    main()
