"""The ``eos`` command line (also ``python -m eos``).

``eos dev-kafka up|down|status`` manages a local Kafka for development and
``eos dev-postgres up|down|status`` a local PostgreSQL;
``eos run MODULE:ATTR`` runs an application (see ``eos run --help``);
``eos verify --input T --output T`` audits a pipeline's exactly-once delivery
from outside (see docs/verify.md); ``eos --version`` prints the installed
version of the ``eos-kafka`` distribution. ``--log-level`` is accepted before
or after a subcommand.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Final, TextIO

from eos import __version__

LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
"""What ``--log-level`` accepts, in any case."""

DEFAULT_LOG_LEVEL: Final = "INFO"

_DEV_KAFKA_DESCRIPTION: Final = """\
Start a local Apache Kafka (KRaft, on 127.0.0.1) in the background for
development and tests, and leave it running. The last line `up` and `status`
print is the bootstrap servers. Not needed if you already have a Kafka
cluster: point your application's bootstrap.servers at it instead (the tests
take EOS_BOOTSTRAP_SERVERS).

needs:
  Java 17+   `java` on PATH, or JAVA_HOME set
  Maven      `mvn` on PATH
  network    to Maven Central on the first `up` only, to fetch Kafka's jars

cache:
  $EOS_CACHE_DIR if set, else $XDG_CACHE_HOME/eos, else ~/.cache/eos. It holds
  kafka-<version>/ (the jars; later runs need no network), dev-kafka/ (the
  running cluster's data, removed by `down`) and dev-kafka.json (its pids and
  ports). Maven also keeps the jars in its own local repository
  (~/.m2/repository by default).
"""

_DEV_POSTGRES_DESCRIPTION: Final = """\
Start a local PostgreSQL (on 127.0.0.1, trust authentication, database and
superuser `eos`) in the background for development, the examples and tests,
and leave it running. The last line `up` and `status` print is the DSN. Not
needed if you already have a PostgreSQL: use its DSN instead (the tests take
EOS_POSTGRES_DSN).

needs:
  PostgreSQL  the server binaries initdb and postgres: $EOS_POSTGRES_BIN, else
              initdb on PATH, else /usr/lib/postgresql/*/bin (Debian and
              Ubuntu: `apt-get install postgresql`)
  psycopg     pip install 'eos-kafka[postgres]'
  as root     the `postgres` OS user (Debian's package creates it): the
              server runs as that user

cache:
  $EOS_CACHE_DIR if set, else $XDG_CACHE_HOME/eos, else ~/.cache/eos. It holds
  dev-postgres/ (the server's data and server.log, removed by `down`) and
  dev-postgres.json (its pid, port and DSN).
"""


_VERIFY_DESCRIPTION: Final = """\
Prove or disprove exactly-once for a running or finished pipeline, from
outside. The application must run with lineage_headers=True
(lineage.headers=true): every output then names its input record in an
eos.lineage header. Reads the outputs, then the inputs, with read_committed
consumers, up to the ends they had when verify started, and reports:

  lost            inputs with no output (with --filters: "filtered")
  duplicates      an input's output n appearing twice in one output topic
  incomplete      inputs missing an output below their last one
  unknown source  outputs naming an input that is not in the input topics
  unattributed    outputs without an eos.lineage header
  order           per key and output partition, an output whose source
                  (from one input partition) is older than the one before

Give every topic the pipeline writes to (a dead-letter topic too: its copies
count as their input's delivery). With an application id (--application-id,
or application.id in --config) only inputs below its committed offsets are
judged, so a running pipeline can be audited.

exit status: 0 nothing found, 1 something found, 2 usage, configuration or
Kafka errors. See docs/verify.md.
"""


def _subcommand(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    help: str,
    description: str | None = None,
    *,
    preformatted: bool = False,
) -> argparse.ArgumentParser:
    """A subcommand parser that also accepts ``--log-level`` after its name;
    ``preformatted``: print ``description`` with its own line breaks."""
    parser = commands.add_parser(
        name,
        help=help,
        description=description,
        formatter_class=(
            argparse.RawDescriptionHelpFormatter if preformatted else argparse.HelpFormatter
        ),
    )
    _add_log_level(parser, top_level=False)
    return parser


def _add_log_level(parser: argparse.ArgumentParser, *, top_level: bool) -> None:
    # Below the top level the default is SUPPRESS: a subcommand that was not
    # given --log-level must not overwrite a value given before it.
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        default=DEFAULT_LOG_LEVEL if top_level else argparse.SUPPRESS,
        metavar="LEVEL",
        help=f"logging level: {', '.join(LOG_LEVELS)}, any case (default {DEFAULT_LOG_LEVEL})",
    )


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eos",
        description="Exactly-once consume-transform-produce for Apache Kafka.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _add_log_level(parser, top_level=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    dev = _subcommand(
        commands,
        "dev-kafka",
        "run a local Kafka (KRaft) in the background for development and tests",
        _DEV_KAFKA_DESCRIPTION,
        preformatted=True,
    )
    dev_commands = dev.add_subparsers(dest="action", required=True, metavar="ACTION")
    up = _subcommand(
        dev_commands,
        "up",
        "start the local cluster (or find it running)",
        _DEV_KAFKA_DESCRIPTION,
        preformatted=True,
    )
    up.add_argument(
        "--nodes", type=int, choices=(1, 3), default=1, help="1 combined node or 3 voters"
    )
    up.add_argument(
        "--security",
        choices=("sasl",),
        default=None,
        help=(
            "SASL/SCRAM users, ACLs enforced and a TLS listener (see docs/security.md); "
            "also needs the JDK's keytool"
        ),
    )
    _subcommand(dev_commands, "down", "stop the cluster that `up` started")
    _subcommand(dev_commands, "status", "say whether it runs; exit 1 if not")

    dev_pg = _subcommand(
        commands,
        "dev-postgres",
        "run a local PostgreSQL in the background for development and tests",
        _DEV_POSTGRES_DESCRIPTION,
        preformatted=True,
    )
    dev_pg_commands = dev_pg.add_subparsers(dest="action", required=True, metavar="ACTION")
    _subcommand(
        dev_pg_commands,
        "up",
        "start the local server (or find it running)",
        _DEV_POSTGRES_DESCRIPTION,
        preformatted=True,
    )
    _subcommand(dev_pg_commands, "down", "stop the server that `up` started, delete its data")
    _subcommand(dev_pg_commands, "status", "say whether it runs; exit 1 if not")

    run = _subcommand(
        commands,
        "run",
        "run an application (MODULE:ATTR), optionally in N worker processes",
        (
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

    verify = _subcommand(
        commands,
        "verify",
        "audit exactly-once from outside: every input delivered once, in per-key order",
        _VERIFY_DESCRIPTION,
        preformatted=True,
    )
    verify.add_argument(
        "--input",
        action="append",
        required=True,
        metavar="TOPIC",
        help="an input topic (repeatable)",
    )
    verify.add_argument(
        "--output",
        action="append",
        required=True,
        metavar="TOPIC",
        help="an output topic (repeatable)",
    )
    verify.add_argument(
        "--bootstrap-servers",
        metavar="HOSTS",
        help="default: the --config file's, else $EOS_BOOTSTRAP_SERVERS, else localhost:9092",
    )
    verify.add_argument(
        "--from-timestamp",
        metavar="MS|ISO",
        help="audit only records at or after this time (ms since the epoch, or ISO 8601, UTC "
        "if no zone)",
    )
    verify.add_argument(
        "--filters",
        action="store_true",
        help="the pipeline drops records: report inputs with no output as filtered, not lost",
    )
    verify.add_argument(
        "--config",
        metavar="FILE",
        help="the application's properties file: its connection (security) settings, "
        "bootstrap.servers and application.id are used",
    )
    verify.add_argument(
        "--application-id",
        metavar="ID",
        help="judge only inputs below this application's committed offsets (default: the "
        "--config file's application.id)",
    )
    verify.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="fail when a read makes no progress this long (default 120)",
    )
    return parser


def _verify(args: argparse.Namespace) -> int:
    """``eos verify``: resolve the settings, run the audit, print the report."""
    from eos.audit import DEFAULT_TIMEOUT_S, audit, client_settings, parse_timestamp
    from eos.errors import ConfigError
    from eos.properties import read_properties

    inputs: list[str] = list(dict.fromkeys(args.input))
    outputs: list[str] = list(dict.fromkeys(args.output))
    both = sorted(set(inputs) & set(outputs))
    if both:
        raise ConfigError(f"{', '.join(both)}: a topic is either an input or an output", "topics")
    props = read_properties(args.config) if args.config else {}
    bootstrap = (
        args.bootstrap_servers
        or props.get("bootstrap.servers")
        or os.environ.get("EOS_BOOTSTRAP_SERVERS")
        or "localhost:9092"
    )
    application_id = args.application_id or props.get("application.id") or None
    since = None if args.from_timestamp is None else parse_timestamp(args.from_timestamp)
    print(
        f"eos verify: inputs {', '.join(inputs)}; outputs {', '.join(outputs)}; Kafka {bootstrap}"
        + (f"; from {_iso(since)} ({since} ms)" if since is not None else "")
        + (f"; judging below {application_id}'s committed offsets" if application_id else "")
    )
    sys.stdout.flush()
    from confluent_kafka import KafkaException

    try:
        report = audit(
            bootstrap_servers=bootstrap,
            inputs=inputs,
            outputs=outputs,
            client_config=client_settings(props),
            from_timestamp_ms=since,
            application_id=application_id,
            filters=args.filters,
            timeout_s=DEFAULT_TIMEOUT_S if args.timeout is None else args.timeout,
            progress=_Progress(sys.stderr),
        )
    except KafkaException as exc:
        raise ConfigError(f"reading from Kafka at {bootstrap} failed: {exc.args[0]}") from exc
    print("\n".join(report.summary()))
    return 0 if report.ok else 1


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat(timespec="milliseconds")


class _Progress:
    """Prints read progress to ``stream``: in place on a terminal, else a line
    every 10 s and at the end."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.printed = 0.0

    def __call__(self, what: str, read: int, offsets: int, done: bool) -> None:
        now = time.monotonic()
        if not self.tty and not done and now - self.printed < 10.0:
            return
        self.printed = now
        text = f"reading {what}: {read:,} records" + (
            ", done" if done else f" (of at most {offsets:,})"
        )
        if self.tty:
            self.stream.write(f"\r{text}" + ("\n" if done else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``eos`` console script."""
    args = _build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
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
        if args.command == "dev-postgres":
            from eos import devpostgres

            if args.action == "up":
                return devpostgres.up()
            if args.action == "down":
                return devpostgres.down()
            return devpostgres.status()
        if args.command == "verify":
            return _verify(args)
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
    except TimeoutError as exc:
        if args.command != "verify":
            raise
        print(f"eos: error: {exc}", file=sys.stderr)
        return 2
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
