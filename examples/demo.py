"""The demo: run a pipeline, SIGKILL it mid-stream, restart it, prove exactly-once.

1. creates an input and an output topic (3 partitions each);
2. produces ``--records`` orders while the pipeline (examples/uppercase.py,
   exactly_once_v2) runs in a child process;
3. SIGKILLs the pipeline mid-stream (no cleanup runs: an open transaction
   is left behind) and starts it again with the same instance id, which
   fences the dead incarnation and aborts its transaction;
4. waits until the consumer group has committed every input offset, stops
   the pipeline with SIGTERM, and reads the output back with a
   ``read_committed`` consumer: every input must appear exactly once,
   upper-cased, in per-key order.

Exits 0 when exactly-once held, 1 when it did not.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

from eos.testing.helpers import create_topic, produce, read_topic, unique_name, wait_caught_up
from eos.testing.process import AppProcess
from eos.testing.verify import verify_exactly_once

HERE = Path(__file__).resolve().parent


def _progress(label: str, done: int, total: int) -> None:
    width = 30
    filled = int(width * done / max(total, 1))
    end = "\n" if done >= total else ""
    print(f"\r{label} [{'#' * filled}{'.' * (width - filled)}] {done:,}/{total:,}", end=end)
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--bootstrap-servers", default=os.environ.get("EOS_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    )
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--keys", type=int, default=100)
    args = parser.parse_args(argv)
    bootstrap = args.bootstrap_servers
    total = args.records
    started = time.monotonic()

    source = create_topic(bootstrap, unique_name("input-orders"), 3)
    sink = create_topic(bootstrap, unique_name("output-orders"), 3)
    app_id = unique_name("demo")
    print(f"Kafka: {bootstrap}\ninput: {source}\noutput: {sink}\napplication: {app_id}")

    produced = [0]

    def producer() -> None:
        chunk = max(1, total // 50)
        for start in range(0, total, chunk):
            end = min(total, start + chunk)
            produce(
                bootstrap,
                source,
                ((f"customer-{i % args.keys}", f"order-{i:07d}") for i in range(start, end)),
            )
            produced[0] = end
            _progress("producing orders ", end, total)
            time.sleep(0.05)

    logs = Path(tempfile.mkdtemp(prefix="eos-demo-"))
    app = AppProcess(
        [
            str(HERE / "uppercase.py"),
            "--bootstrap-servers",
            bootstrap,
            "--input",
            source,
            "--output",
            sink,
            "--application-id",
            app_id,
        ],
        log_path=logs / "pipeline.log",
    )
    feeder = threading.Thread(target=producer, daemon=True)
    app.start()
    app.wait_for_log("assigned", timeout=120)
    processing_started = time.monotonic()
    feeder.start()
    try:
        while produced[0] < total // 3:
            time.sleep(0.05)
        app.kill()
        print(
            f"\nSIGKILLed the pipeline (pid {app.pid}) mid-stream after "
            f"{produced[0]:,} orders were produced; restarting it"
        )
        app.start()
        feeder.join()
        wait_caught_up(bootstrap, app_id, source, timeout=600)
        elapsed = time.monotonic() - processing_started
        code = app.terminate()
        print(f"pipeline stopped with SIGTERM, exit code {code}")
    finally:
        app.kill()

    inputs = read_topic(bootstrap, source)
    outputs = read_topic(bootstrap, sink)
    verdict = verify_exactly_once(inputs, outputs, bytes.upper)
    print()
    print("verification (read_committed)")
    print(f"  inputs            {verdict.inputs:,}")
    print(f"  outputs           {verdict.outputs:,}")
    print(f"  duplicates        {verdict.duplicates}")
    print(f"  lost              {verdict.lost}")
    print(f"  per-key order     {'kept' if not verdict.out_of_order_keys else 'BROKEN'}")
    print(f"  crashes survived  1 SIGKILL")
    print(
        f"  throughput        {verdict.inputs / elapsed:,.0f} records/s (incl. crash and restart)"
    )
    print(f"  total time        {time.monotonic() - started:.1f}s; logs in {logs}")
    if verdict.ok and verdict.inputs == total:
        print("EXACTLY-ONCE HELD: every input appears exactly once in the output.")
        return 0
    print(f"EXACTLY-ONCE VIOLATED: {verdict}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
