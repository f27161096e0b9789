"""The ``eos`` command line.

``eos dev-kafka up|down|status`` manages a local Kafka for development;
``eos run MODULE:ATTR`` runs an application (see ``eos run --help``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eos",
        description="Exactly-once consume-transform-produce for Apache Kafka.",
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    dev = commands.add_parser(
        "dev-kafka",
        help="run a local Kafka (KRaft) in the background for development and tests",
        description=(
            "Fetches Apache Kafka with Maven (once, into the cache dir), starts it on "
            "127.0.0.1 and leaves it running. The last line `up` and `status` print is "
            "the bootstrap servers."
        ),
    )
    dev_commands = dev.add_subparsers(dest="action", required=True, metavar="ACTION")
    up = dev_commands.add_parser("up", help="start the local cluster (or find it running)")
    up.add_argument(
        "--nodes", type=int, choices=(1, 3), default=1, help="1 combined node or 3 voters"
    )
    up.add_argument(
        "--security",
        choices=("sasl",),
        default=None,
        help="SASL/SCRAM users, ACLs enforced and a TLS listener (see docs/security.md)",
    )
    dev_commands.add_parser("down", help="stop the cluster that `up` started")
    dev_commands.add_parser("status", help="say whether it runs; exit 1 if not")

    run = commands.add_parser(
        "run",
        help="run an application (MODULE:ATTR), optionally in N worker processes",
        description=(
            "Run the eos application that MODULE:ATTR names: an eos.Application, an "
            "eos.Processor (instance or class) or an eos.StreamBuilder. A Processor or "
            "StreamBuilder needs --config. With --workers N, N processes run with instance "
            "ids <instance_id>-0..N-1 and share the input partitions through the consumer "
            "group; SIGTERM/SIGINT stops them all cleanly and a worker that dies is restarted."
        ),
    )
    run.add_argument("target", metavar="MODULE:ATTR", help="e.g. examples.order_enrichment:app")
    run.add_argument(
        "--config", metavar="FILE", help="Kafka-style properties file (application.id, ...)"
    )
    run.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    run.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve Prometheus /metrics on this port (worker i uses PORT+i)",
    )
    run.add_argument("--instance-id", default=None, help="override the instance id")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``eos`` console script."""
    args = _build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from eos.errors import EosError

    try:
        if args.command == "dev-kafka":
            from eos import devkafka

            if args.action == "up":
                return devkafka.up(args.nodes, args.security)
            if args.action == "down":
                return devkafka.down()
            return devkafka.status()
        if args.command == "run":
            from eos.runner import run

            return run(
                args.target,
                config_path=args.config,
                workers=args.workers,
                metrics_port=args.metrics_port,
                instance_id=args.instance_id,
            )
    except EosError as exc:
        print(f"eos: error: {exc}", file=sys.stderr)
        return 2
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
