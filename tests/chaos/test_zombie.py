"""A paused instance whose partitions moved on is a zombie: its transaction never commits."""

from __future__ import annotations

import signal
import time

import pytest
from chaosapps import (
    SteadyProducer,
    interesting,
    log_size,
    log_text,
    uppercase_app,
    wait_for_new_log,
    wait_no_open_transactions,
)

from eos.testing.helpers import create_topic, read_topic, unique_name, wait_caught_up
from eos.testing.verify import verify_exactly_once

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

RECORDS = 6_000
SESSION_MS = 6000


def test_sigstopped_instance_is_fenced_and_output_stays_exactly_once(bootstrap, tmp_path) -> None:
    """An instance SIGSTOPped mid-transaction for twice its session timeout loses its
    partitions to the other; resumed, its open transaction never commits, and the
    output holds every input exactly once."""
    source = create_topic(bootstrap, unique_name("in"), 3)
    sink = create_topic(bootstrap, unique_name("out"), 3)
    app_id = unique_name("zombie")
    common = {"session_timeout_ms": str(SESSION_MS)}
    # A long commit interval keeps the zombie's transaction open when it is paused.
    zombie = uppercase_app(
        bootstrap,
        source,
        sink,
        app_id,
        tmp_path,
        instance="a",
        commit_interval_ms="2000",
        log_level="DEBUG",
        **common,
    )
    other = uppercase_app(bootstrap, source, sink, app_id, tmp_path, instance="b", **common)
    feed = SteadyProducer(bootstrap, source, RECORDS, 25.0, chunks=100).start()
    zombie.start()
    other.start()
    try:
        zombie.wait_for_log("assigned in-", timeout=60)
        other.wait_for_log("assigned in-", timeout=60)
        # Pause it 1 s after a commit: input arrives every ~0.3 s and the next commit
        # is due 2 s after the transaction began, so a transaction with records is open.
        wait_for_new_log(zombie, "committed", log_size(zombie), timeout=30)
        time.sleep(1.0)
        other_before = log_size(other)
        zombie.signal(signal.SIGSTOP)
        paused = time.monotonic()
        time.sleep(2 * SESSION_MS / 1000)
        took_over = interesting(log_text(other, other_before), "assigned")
        zombie_before = log_size(zombie)
        zombie.signal(signal.SIGCONT)
        print(f"zombie paused {time.monotonic() - paused:.1f}s; the other then logged {took_over}")
        assert took_over, "the other instance should have been given the zombie's partitions"
        sent = feed.join()
        wait_caught_up(bootstrap, app_id, source, timeout=60)
        zombie_log = log_text(zombie, zombie_before)
        zombie_code = zombie.terminate(60)
        other_code = other.terminate(60)
    finally:
        zombie.signal(signal.SIGCONT)
        zombie.kill()
        other.kill()
    print("zombie after SIGCONT:")
    for line in interesting(zombie_log):
        print("   ", line[:300])
    wait_no_open_transactions(bootstrap, sink)
    inputs = read_topic(bootstrap, source)
    outputs = read_topic(bootstrap, sink)
    uncommitted = read_topic(bootstrap, sink, isolation_level="read_uncommitted")
    verdict = verify_exactly_once(inputs, outputs, bytes.upper)
    print(
        f"records={sent} {verdict} read_uncommitted={len(uncommitted)} "
        f"zombie_exit={zombie_code} other_exit={other_code}"
    )
    assert verdict.inputs == RECORDS
    assert verdict.ok, verdict
    assert other_code == 0, other.log_tail()
    assert len(uncommitted) > len(outputs), "the zombie had records in its open transaction"
    assert "aborting transaction" in zombie_log, "the resumed zombie must abort its transaction"
