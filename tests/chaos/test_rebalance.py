"""Instances joining, leaving cleanly and crashing mid-stream keep the output exactly once."""

from __future__ import annotations

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

RECORDS = 8_000
# Static membership is on: a stopped or killed member's partitions move only
# after its session times out.
SESSION_MS = "6000"


@pytest.mark.parametrize("strategy", ["cooperative-sticky", "range"])
def test_join_leave_and_crash_mid_stream_is_exactly_once(bootstrap, tmp_path, strategy) -> None:
    """With continuous input, a 2nd and 3rd instance join, one leaves on SIGTERM and one is
    SIGKILLed (and later restarts); the survivor takes everything over and the output holds
    each input exactly once."""
    source = create_topic(bootstrap, unique_name("in"), 6)
    sink = create_topic(bootstrap, unique_name("out"), 6)
    app_id = unique_name(f"rebalance-{strategy[:4]}")

    def instance(name: str):
        return uppercase_app(
            bootstrap,
            source,
            sink,
            app_id,
            tmp_path,
            instance=name,
            assignment_strategy=strategy,
            session_timeout_ms=SESSION_MS,
            log_level="DEBUG",
        )

    apps = {name: instance(name) for name in ("a", "b", "c")}
    feed = SteadyProducer(bootstrap, source, RECORDS, 20.0, chunks=80).start()
    started = time.monotonic()
    try:
        apps["a"].start().wait_for_log("assigned in-", timeout=60)
        time.sleep(2.0)
        apps["b"].start().wait_for_log("assigned in-", timeout=60)
        time.sleep(2.0)
        apps["c"].start().wait_for_log("assigned in-", timeout=60)
        time.sleep(2.0)
        term_started = time.monotonic()
        b_code = apps["b"].terminate(60)
        term_seconds = time.monotonic() - term_started
        time.sleep(1.0)
        apps["c"].kill()
        sent = feed.join()
        # The killed instance's open transaction holds its offsets pending until the broker
        # aborts it: transaction.timeout.ms (60 s) after its last use, plus the broker's
        # abort check (every 10 s); the survivor cannot start those partitions before.
        wait_caught_up(bootstrap, app_id, source, timeout=150)
        caught_up = time.monotonic() - started
        # The crashed instance comes back: init_transactions() aborts the transaction
        # it left open (else read_committed readers wait for transaction.timeout.ms).
        since = log_size(apps["c"])
        apps["c"].start()
        wait_for_new_log(apps["c"], "assigned in-", since, timeout=60)
        c_code = apps["c"].terminate(60)
        a_code = apps["a"].terminate(60)
    finally:
        for app in apps.values():
            app.kill()
    logs = {name: log_text(app) for name, app in apps.items()}
    for name, text in logs.items():
        print(f"instance {name}:")
        for line in interesting(text, "assigned", "revok", "lost", "abort", "fenc", "error"):
            print("   ", line[:200])
    wait_no_open_transactions(bootstrap, sink)
    verdict = verify_exactly_once(
        read_topic(bootstrap, source), read_topic(bootstrap, sink), bytes.upper
    )
    aborts = sum(text.count("aborting transaction") for text in logs.values())
    assignments = sum(text.count("assigned in-") for text in logs.values())
    print(
        f"strategy={strategy} records={sent} {verdict} assignments={assignments} aborts={aborts} "
        f"sigterm_exit={b_code} sigterm_seconds={term_seconds:.1f} "
        f"caught_up_after={caught_up:.1f}s "
        f"survivor_exit={a_code} restarted_exit={c_code}"
    )
    assert verdict.inputs == RECORDS
    assert verdict.ok, verdict
    assert b_code == 0, apps["b"].log_tail()
    assert a_code == 0, apps["a"].log_tail()
    assert c_code == 0, apps["c"].log_tail()
