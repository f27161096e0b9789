"""The application of the async chaos tests (tests/chaos/test_async_chaos.py), run as a child.

    python tests/chaos/async_app.py --bootstrap-servers ... --input ... --output ...
        --application-id ... [--dsl] [--max-in-flight 50] [--latency-ms 1-20]

examples/async_enrichment.py's enrichment: each order (JSON, keyed by its customer) is
merged with its customer's record, fetched over HTTP from the example's customer service
(started in this process, on 127.0.0.1, answering after ``--latency-ms``: ``MIN-MAX`` is
uniform at random per request), and sent to ``--output`` with the same key. The
AsyncProcessor ``EnrichOrders`` by default; ``--dsl``: the DSL's ``map_values_async``.

Every ``--progress-every`` finished lookups it logs ``async_app: N lookups done (at most
P at once)``, so a test can SIGKILL it once it has processed records (with others in
flight) and see how many lookups overlapped.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

sys.path.append(str(Path(__file__).resolve().parents[2]))  # for examples/

import eos
from examples.async_enrichment import (
    CustomerClient,
    EnrichOrders,
    Order,
    build_dsl,
)

log = logging.getLogger("async_app")


class CountingClient(CustomerClient):
    """The example's client, logging every ``every`` lookups done in this process, with
    the most lookups that were in flight at once so far."""

    def __init__(self, every: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.every = every
        self.done = 0
        self.running = 0
        self.peak = 0

    async def enrich(self, order: Order) -> Order:
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            enriched = await super().enrich(order)
        finally:
            self.running -= 1
        self.done += 1
        if self.done % self.every == 0:
            log.info("%d lookups done (at most %d at once)", self.done, self.peak)
        return enriched


def build_app(argv: list[str] | None = None) -> eos.Application:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap-servers", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--application-id", required=True)
    parser.add_argument("--instance-id", default="0")
    parser.add_argument("--dsl", action="store_true", help="map_values_async instead")
    parser.add_argument("--max-in-flight", type=int, default=50)
    parser.add_argument("--latency-ms", default="1-20")
    parser.add_argument("--record-timeout-ms", type=int, default=5_000)
    parser.add_argument("--commit-interval-ms", type=int, default=100)
    parser.add_argument("--transaction-timeout-ms", type=int, default=10_000)
    parser.add_argument("--session-timeout-ms", type=int, default=None)
    parser.add_argument("--progress-every", type=int, default=50)
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s",
    )
    client = CountingClient(
        args.progress_every, latency_ms=args.latency_ms, connections=args.max_in_flight
    )
    options: dict[str, Any] = {}
    if args.session_timeout_ms:
        options["consumer_config"] = {
            "session.timeout.ms": args.session_timeout_ms,
            "heartbeat.interval.ms": max(100, args.session_timeout_ms // 5),
        }
    if args.dsl:
        processor: eos.Processor = build_dsl(client, args.input, args.output).build()
    else:
        processor = EnrichOrders(args.output, client)
        options["input_topics"] = [args.input]
    return eos.Application(
        application_id=args.application_id,
        bootstrap_servers=args.bootstrap_servers,
        processor=processor,
        instance_id=args.instance_id,
        key_serde="string",
        value_serde="json",
        max_in_flight=args.max_in_flight,
        record_timeout_ms=args.record_timeout_ms,
        commit_interval_ms=args.commit_interval_ms,
        transaction_timeout_ms=args.transaction_timeout_ms,
        **options,
    )


def main(argv: list[str] | None = None) -> None:
    build_app(argv).run()


if __name__ == "__main__":
    main()
