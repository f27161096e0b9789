"""The demo: the order-enrichment pipeline with 2 workers, one SIGKILLed, proven exactly-once.

1. creates the ``customers``, ``input-orders``, ``output-orders``, ``order-counts``
   and ``orders-per-region`` topics (unique names, 4 partitions), produces a
   record (tier and region) for most of ``--keys`` customers, then ``--records``
   orders over all of them, with a progress bar;
2. runs ``eos run examples.order_enrichment:dsl_app --workers 2 --config
   demo.properties`` (the DSL pipeline: orders left-joined with the customers
   table, counted per customer and, through a repartition topic, per region),
   the properties file turning ``lineage.headers`` on: every output names the
   order it came from;
3. SIGKILLs one worker mid-stream (no cleanup runs: its open transaction and
   unflushed state are left behind); the supervisor restarts it with the same
   instance id, which fences the dead incarnation;
4. waits until every input offset is committed, stops the workers with
   SIGTERM, and runs ``eos verify --input input-orders --output output-orders
   --output order-counts``: every order must have exactly its two outputs (its
   enriched copy and its count update), none twice, in per-key order. Then
   it reads the outputs back with a ``read_committed`` consumer for their
   contents: every order upper-cased and enriched with its customer's tier
   (``unknown`` for a customer with no record), every customer's counts
   exactly 1..N once each, and every region's too (the per-region counts come
   from the repartition topic, whose records carry no lineage header).

Exits 0 when exactly-once held, 1 when it did not.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

from eos.audit import LINEAGE_HEADER, parse_lineage
from eos.testing.helpers import (
    ReadRecord,
    committed_offsets,
    create_topic,
    produce,
    read_topic,
    unique_name,
    wait_caught_up,
)

ROOT = Path(__file__).resolve().parent.parent


def _bar(label: str, done: int, total: int) -> None:
    width = 30
    filled = int(width * done / max(total, 1))
    end = "\n" if done >= total else ""
    print(f"\r{label} [{'#' * filled}{'.' * (width - filled)}] {done:,}/{total:,}", end=end)
    sys.stdout.flush()


def _committed_total(bootstrap: str, group: str, topic: str) -> int:
    return sum(max(0, o) for o in committed_offsets(bootstrap, group, topic).values())


def _worker_pid(log_path: Path, index: int) -> int:
    pids = re.findall(rf"worker {index} started \(pid (\d+)", log_path.read_text(errors="replace"))
    if not pids:
        raise RuntimeError(f"worker {index} not started; see {log_path}")
    return int(pids[-1])


TIERS = ("bronze", "silver", "gold")
REGIONS = ("north", "south", "east", "west")


def _customer(i: int) -> dict[str, str] | None:
    """Customer ``i``'s record; every tenth customer has none (its orders say unknown)."""
    if i % 10 == 9:
        return None
    return {"tier": TIERS[i % 3], "region": REGIONS[i % 4]}


def _enriched(order: bytes, key: bytes) -> bytes:
    """What the pipeline writes for ``order`` of customer ``key``."""
    customer = _customer(int(key.decode().rsplit("-", 1)[1]))
    tier = customer["tier"] if customer else "unknown"
    return order.upper() + f" tier={tier}".encode()


def _region(key: bytes | None) -> bytes:
    customer = _customer(int((key or b"-0").decode().rsplit("-", 1)[1]))
    return (customer["region"] if customer else "unknown").encode()


def _misenriched(inputs: list[ReadRecord], outputs: list[ReadRecord]) -> int:
    """Outputs whose value is not their own order's enrichment (found by lineage header)."""
    orders = {(r.partition, r.offset): r for r in inputs}
    bad = 0
    for output in outputs:
        source = parse_lineage(dict(output.headers).get(LINEAGE_HEADER))
        order = None if source is None else orders.get((source[1], source[2]))
        if order is None or output.value != _enriched(order.value or b"", order.key or b""):
            bad += 1
    return bad


def _eos_verify(bootstrap: str, app_id: str, source: str, outputs: list[str]) -> tuple[int, int]:
    """Run ``eos verify`` on the pipeline, printing what it prints; return its exit
    code and the number of inputs it judged."""
    command = ["eos", "verify", "--bootstrap-servers", bootstrap, "--input", source]
    for topic in outputs:
        command += ["--output", topic]
    command += ["--application-id", app_id]
    print("$ " + " ".join(command))
    result = subprocess.run(
        [sys.executable, "-m", "eos.cli", *command[1:]],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    print(result.stdout, end="")
    if result.returncode == 2:
        print(result.stderr, end="")
    judged = re.search(r"^  inputs judged +([\d,]+)", result.stdout, re.MULTILINE)
    return result.returncode, int(judged.group(1).replace(",", "")) if judged else 0


def _same(key: bytes | None) -> bytes | None:
    return key


def _check_counts(
    inputs: list[ReadRecord],
    counts: list[ReadRecord],
    group: Callable[[bytes | None], bytes | None] = _same,
) -> tuple[int, int]:
    """Per group (the key, or ``group(key)``): emitted counts must be exactly 1..N in
    order. Returns (groups, bad groups)."""
    truth = Counter(group(r.key) for r in inputs if r.value is not None)
    emitted: dict[bytes | None, list[int]] = defaultdict(list)
    for record in counts:
        if record.value is not None:
            emitted[record.key].append(int(record.value))
    bad = [k for k, n in truth.items() if emitted.get(k) != list(range(1, n + 1))]
    bad += [k for k in emitted if k not in truth]
    return len(truth), len(bad)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--bootstrap-servers", default=os.environ.get("EOS_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    )
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--keys", type=int, default=1_000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    bootstrap = args.bootstrap_servers
    total = args.records
    started = time.monotonic()

    customers = create_topic(bootstrap, unique_name("customers"), 4)
    source = create_topic(bootstrap, unique_name("input-orders"), 4)
    sink = create_topic(bootstrap, unique_name("output-orders"), 4)
    counts_topic = create_topic(bootstrap, unique_name("order-counts"), 4)
    regions_topic = create_topic(bootstrap, unique_name("orders-per-region"), 4)
    app_id = unique_name("order-enrichment")
    work = Path(tempfile.mkdtemp(prefix="eos-demo-"))
    print(f"Kafka {bootstrap}; application {app_id}; logs and state in {work}")

    # Same key, same partitioner: the customers table is co-partitioned with the orders.
    produce(
        bootstrap,
        customers,
        (
            (f"customer-{i:04d}", json.dumps(record))
            for i in range(args.keys)
            if (record := _customer(i)) is not None
        ),
    )
    print(f"produced {sum(_customer(i) is not None for i in range(args.keys)):,} customers")
    chunk = max(1, total // 40)
    for start in range(0, total, chunk):
        end = min(total, start + chunk)
        produce(
            bootstrap,
            source,
            ((f"customer-{i % args.keys:04d}", f"order-{i:07d}") for i in range(start, end)),
        )
        _bar("producing orders  ", end, total)

    env = {
        **os.environ,
        "EOS_BOOTSTRAP_SERVERS": bootstrap,
        "ORDERS_APPLICATION_ID": app_id,
        "ORDERS_INPUT": source,
        "ORDERS_CUSTOMERS": customers,
        "ORDERS_OUTPUT": sink,
        "ORDERS_COUNTS": counts_topic,
        "ORDERS_REGION_COUNTS": regions_topic,
        "ORDERS_STATE_DIR": str(work / "state"),
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    log_path = work / "workers.log"
    properties = work / "demo.properties"
    # Every output names the order it came from, for eos verify.
    properties.write_text("lineage.headers=true\n")
    command = [sys.executable, "-m", "eos.cli", "run", "examples.order_enrichment:dsl_app"]
    command += ["--workers", str(args.workers), "--config", str(properties)]
    print(
        f"running: eos run examples.order_enrichment:dsl_app --workers {args.workers} "
        f"--config {properties} (lineage.headers=true)"
    )
    with open(log_path, "wb") as log:
        supervisor = subprocess.Popen(command, env=env, cwd=ROOT, stdout=log, stderr=log)
    processing_started = time.monotonic()
    try:
        done = 0
        while done < total // 6:
            if supervisor.poll() is not None:
                raise RuntimeError(f"the workers exited early; see {log_path}")
            done = _committed_total(bootstrap, app_id, source)
            _bar("processing        ", done, total)
            time.sleep(0.2)
        victim = _worker_pid(log_path, 0)
        os.kill(victim, signal.SIGKILL)
        print(
            f"\nSIGKILLed worker 0 (pid {victim}) mid-stream, {done:,} orders committed; "
            "the supervisor restarts it"
        )
        deadline = time.monotonic() + 120
        while _worker_pid(log_path, 0) == victim and time.monotonic() < deadline:
            time.sleep(0.2)
        while done < total:
            done = _committed_total(bootstrap, app_id, source)
            _bar("processing        ", done, total)
            time.sleep(0.2)
        wait_caught_up(bootstrap, app_id, source, timeout=600)
        # The per-region counts come from the repartition topic, one step behind the orders.
        wait_caught_up(bootstrap, app_id, f"{app_id}-orders-per-region-repartition", timeout=600)
        elapsed = time.monotonic() - processing_started
        supervisor.send_signal(signal.SIGTERM)
        code = supervisor.wait(120)
        print(f"workers stopped with SIGTERM, exit code {code}")
    finally:
        if supervisor.poll() is None:
            # SIGTERM lets the supervisor stop its workers; SIGKILL would orphan them.
            supervisor.send_signal(signal.SIGTERM)
            try:
                supervisor.wait(60)
            except subprocess.TimeoutExpired:
                supervisor.kill()

    restarted = _worker_pid(log_path, 0) != victim
    print()
    print("verification 1: delivery, with eos verify (read_committed consumers)")
    verified, judged = _eos_verify(bootstrap, app_id, source, [sink, counts_topic])
    inputs = read_topic(bootstrap, source)
    outputs = read_topic(bootstrap, sink)
    counts = read_topic(bootstrap, counts_topic)
    misenriched = _misenriched(inputs, outputs)
    keys, bad_keys = _check_counts(inputs, counts)
    regions, bad_regions = _check_counts(inputs, read_topic(bootstrap, regions_topic), _region)
    ok = (
        verified == 0
        and judged == total
        and misenriched == 0
        and bad_keys == 0
        and bad_regions == 0
        and restarted
        and code == 0
    )
    print()
    print("verification 2: contents (read_committed consumer)")
    print(f"  orders judged       {judged:,} by eos verify (exit code {verified})")
    print(
        f"  enrichment          {len(outputs) - misenriched:,}/{len(outputs):,} outputs are "
        "their own order with its customer's tier (customers table join)"
    )
    print(f"  per-key counts      {keys - bad_keys:,}/{keys:,} customers exact (1..N once each)")
    print(
        f"  per-region counts   {regions - bad_regions}/{regions} regions exact (1..N once each, "
        "through a repartition topic)"
    )
    print(
        f"  crash               worker 0 SIGKILLed, {'restarted' if restarted else 'NOT restarted'}"
    )
    print(
        f"  throughput          {total / elapsed:,.0f} orders/s with {args.workers} "
        "workers, crash and restart included"
    )
    print(f"  total time          {time.monotonic() - started:.1f}s")
    if ok:
        print(
            "EXACTLY-ONCE HELD: every order exactly once and enriched, every count exact, "
            "across a SIGKILL."
        )
        return 0
    print(
        f"EXACTLY-ONCE VIOLATED: eos verify exit code {verified} ({judged:,} of {total:,} "
        f"orders judged); misenriched outputs {misenriched}; bad count keys {bad_keys}; bad "
        f"regions {bad_regions}; workers' exit code {code}"
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
