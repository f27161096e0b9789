"""Kafka's own transaction test matrix, run against eos: one table of numbers.

Starts a 3-node KRaft cluster with the project's launcher (replication 3,
``min.insync.replicas=2``) and runs every cell of :mod:`matrix` (a copy and a
count-per-key pipeline, two instances each, under each kind of fault), then
prints the table and exits non-zero if any cell failed.

Usage::

    python reliability/run.py                  # 100,000 records and 5 faults per cell
    python reliability/run.py --quick          # 3,000 records and 1 fault per cell
    python reliability/run.py --cells controller-kill,coordinator-kill --records 20000
    python reliability/run.py --output docs/reliability.md   # also write the page
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eos.testing.kafka import KAFKA_VERSION, KafkaCluster
from reliability.matrix import FAULTS, run_matrix, table

PAGE_HEAD = (Path(__file__).resolve().parent / "page_head.md").read_text()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, help="committed input records per cell (100,000)")
    parser.add_argument("--faults", type=int, help="faults injected per cell (5)")
    parser.add_argument("--quick", action="store_true", help="3,000 records and 1 fault per cell")
    parser.add_argument("--cells", default=",".join(FAULTS), help="comma-separated faults")
    parser.add_argument("--output", default="-", help="write the Markdown page here ('-': none)")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    records = args.records or (3_000 if args.quick else 100_000)
    faults = args.faults or (1 if args.quick else 5)
    cells = [c.strip() for c in args.cells.split(",") if c.strip()]
    started = time.monotonic()
    work_dir = Path(tempfile.mkdtemp(prefix="eos-reliability-"))
    print(f"starting a 3-node Kafka {KAFKA_VERSION} cluster ...", flush=True)
    with KafkaCluster(3) as cluster:
        results = run_matrix(
            cluster,
            records=records,
            faults=faults,
            cells=cells,
            work_dir=work_dir,
            log=lambda line: print(line, flush=True),
        )
    elapsed = time.monotonic() - started
    text = table(results)
    print(text)
    failed = [r for r in results if not r.ok]
    print(
        f"{len(results)} rows, {len(failed)} failed, {elapsed:.0f}s in all"
        + (f"; logs of failed cells under {work_dir}" if failed else "")
    )
    if args.output != "-":
        Path(args.output).write_text(
            PAGE_HEAD
            + f"\n## Results\n\n{records:,} committed records and {faults} faults per cell; "
            f"{platform.machine()}, {_cores()} cores, Kafka {KAFKA_VERSION}; "
            f"{elapsed / 60:.0f} minutes in all.\n\n{text}\n"
        )
    return 1 if failed else 0


def _cores() -> int:
    import os

    return os.cpu_count() or 0


if __name__ == "__main__":
    sys.exit(main())
