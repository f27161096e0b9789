"""The application of the PostgreSQL sink chaos tests (tests/chaos/test_postgres_chaos.py).

    python tests/chaos/pg_app.py --bootstrap-servers ... --dsn ... --input ... --table ...
        --dead-letter ... --application-id ... [--instance-id a] [--stop-at-commit N]

examples/orders_to_postgres.py's ``SaveOrders`` into ``--table``. ``--stop-at-commit N``:
on its Nth commit, after the offsets update and before COMMIT (holding the offsets rows'
locks), the process sends itself SIGSTOP: a zombie paused at the worst moment, to be
resumed with SIGCONT by the test. It logs ``pg_app: stopping myself`` just before.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[2]))  # for examples/

from eos.faults import Faults
from examples.orders_to_postgres import build_app

log = logging.getLogger("pg_app")


class StopAtCommit(Faults):
    """SIGSTOP this process at the ``at``-th commit, before its COMMIT."""

    def __init__(self, at: int) -> None:
        self.at = at

    def before_commit(self, attempt: int) -> None:
        if attempt == self.at:
            self.at = 0  # once: the retried commit has the same number
            log.info("stopping myself before commit %d", attempt)
            for handler in logging.getLogger().handlers:
                handler.flush()
            os.kill(os.getpid(), signal.SIGSTOP)
            log.info("resumed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap-servers", required=True)
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--table", required=True)
    parser.add_argument("--dead-letter", required=True)
    parser.add_argument("--application-id", required=True)
    parser.add_argument("--instance-id", default="0")
    parser.add_argument("--commit-interval-ms", type=int, default=100)
    parser.add_argument("--transaction-timeout-ms", type=int, default=60_000)
    parser.add_argument("--session-timeout-ms", type=int, default=None)
    parser.add_argument("--stop-at-commit", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s",
        stream=sys.stdout,
    )
    consumer: dict[str, str | int | float | bool] = {}
    if args.session_timeout_ms:
        consumer["session.timeout.ms"] = args.session_timeout_ms
        consumer["heartbeat.interval.ms"] = max(100, args.session_timeout_ms // 6)
    app = build_app(
        bootstrap_servers=args.bootstrap_servers,
        dsn=args.dsn,
        input_topic=args.input,
        table=args.table,
        dead_letter_topic=args.dead_letter,
        application_id=args.application_id,
        instance_id=args.instance_id,
        commit_interval_ms=args.commit_interval_ms,
        transaction_timeout_ms=args.transaction_timeout_ms,
        consumer_config=consumer,
        faults=StopAtCommit(args.stop_at_commit) if args.stop_at_commit else None,
    )
    app.run()


if __name__ == "__main__":
    main()
