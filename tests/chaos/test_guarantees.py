"""The weaker guarantees hold under SIGKILL, and SIGTERM is a clean, bounded stop."""

from __future__ import annotations

import random
import time

import pytest
from chaosapps import (
    SteadyProducer,
    log_size,
    uppercase_app,
    wait_for_new_log,
    wait_no_open_transactions,
)

from eos.config import DEFAULT_SHUTDOWN_TIMEOUT_S
from eos.testing.helpers import (
    committed_offsets,
    create_topic,
    read_topic,
    unique_name,
    wait_caught_up,
)
from eos.testing.verify import Verdict, verify_exactly_once

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

RECORDS = 6_000
KILLS = 3


def _kill_three_times(bootstrap: str, tmp_path, guarantee: str, seed: int) -> tuple[Verdict, int]:
    source = create_topic(bootstrap, unique_name("in"), 3)
    sink = create_topic(bootstrap, unique_name("out"), 3)
    app_id = unique_name(guarantee.replace("_", "-"))
    app = uppercase_app(bootstrap, source, sink, app_id, tmp_path, guarantee=guarantee)
    rng = random.Random(seed)
    feed = SteadyProducer(bootstrap, source, RECORDS, 12.0, chunks=60).start()
    kills = 0
    try:
        since = log_size(app)
        app.start()
        for _ in range(KILLS):
            wait_for_new_log(app, "assigned in-", since, timeout=60)
            time.sleep(rng.uniform(0.5, 2.5))
            app.kill()
            kills += 1
            since = log_size(app)
            app.start()
        wait_for_new_log(app, "assigned in-", since, timeout=60)
        feed.join()
        wait_caught_up(bootstrap, app_id, source, timeout=60)
        assert app.terminate(60) == 0, app.log_tail()
    finally:
        app.kill()
    verdict = verify_exactly_once(
        read_topic(bootstrap, source), read_topic(bootstrap, sink), bytes.upper
    )
    return verdict, kills


def test_at_least_once_under_sigkill_loses_nothing(bootstrap, tmp_path) -> None:
    """at_least_once, SIGKILLed 3 times mid-stream and restarted: no input is lost
    (duplicates are allowed and counted)."""
    verdict, kills = _kill_three_times(bootstrap, tmp_path, "at_least_once", seed=11)
    print(
        f"at_least_once records={RECORDS} kills={kills} duplicates={verdict.duplicates} "
        f"lost={verdict.lost} {verdict}"
    )
    assert verdict.inputs == RECORDS
    assert verdict.lost == 0, verdict
    assert verdict.unexpected == 0, verdict


def test_at_most_once_under_sigkill_never_duplicates(bootstrap, tmp_path) -> None:
    """at_most_once, SIGKILLed 3 times mid-stream and restarted: no input is output twice
    (losses are allowed and counted)."""
    verdict, kills = _kill_three_times(bootstrap, tmp_path, "at_most_once", seed=12)
    print(
        f"at_most_once records={RECORDS} kills={kills} duplicates={verdict.duplicates} "
        f"lost={verdict.lost} {verdict}"
    )
    assert verdict.inputs == RECORDS
    assert verdict.duplicates == 0, verdict
    assert verdict.unexpected == 0, verdict


def test_sigterm_commits_what_it_processed_and_exits_promptly(bootstrap, tmp_path) -> None:
    """SIGTERM mid-stream commits the processed records and exits 0 well within
    shutdown_timeout_s; the restarted instance continues with nothing lost or duplicated."""
    source = create_topic(bootstrap, unique_name("in"), 3)
    sink = create_topic(bootstrap, unique_name("out"), 3)
    app_id = unique_name("sigterm")
    app = uppercase_app(bootstrap, source, sink, app_id, tmp_path)
    feed = SteadyProducer(bootstrap, source, RECORDS, 12.0, chunks=60).start()
    try:
        app.start().wait_for_log("assigned in-", timeout=60)
        time.sleep(3.0)
        started = time.monotonic()
        code = app.terminate(DEFAULT_SHUTDOWN_TIMEOUT_S + 30)
        seconds = time.monotonic() - started
        # Right after the exit: no transaction left open, and the visible output
        # is exactly the input up to the committed offsets.
        open_wait = wait_no_open_transactions(bootstrap, sink, timeout=5)
        committed = committed_offsets(bootstrap, app_id, source)
        inputs = read_topic(bootstrap, source)
        processed = [r for r in inputs if r.offset < committed.get(r.partition, -1)]
        at_stop = verify_exactly_once(processed, read_topic(bootstrap, sink), bytes.upper)
        since = log_size(app)
        app.start()
        wait_for_new_log(app, "assigned in-", since, timeout=60)
        sent = feed.join()
        wait_caught_up(bootstrap, app_id, source, timeout=60)
        assert app.terminate(60) == 0, app.log_tail()
    finally:
        app.kill()
    final = verify_exactly_once(
        read_topic(bootstrap, source), read_topic(bootstrap, sink), bytes.upper
    )
    print(
        f"records={sent} sigterm_exit={code} sigterm_seconds={seconds:.2f} "
        f"(bound {DEFAULT_SHUTDOWN_TIMEOUT_S:.0f}s) committed_at_stop={sum(committed.values())} "
        f"open_txn_wait={open_wait:.2f}s at_stop: {at_stop} | final: {final}"
    )
    assert code == 0, app.log_tail()
    assert seconds < 5.0, "a clean stop is one commit and a group leave, not the shutdown bound"
    assert at_stop.ok and at_stop.inputs > 0, at_stop
    assert final.inputs == RECORDS
    assert final.ok, final
