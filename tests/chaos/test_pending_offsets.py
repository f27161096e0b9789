"""Taking over partitions whose dead former owner left transactional offsets pending."""

from __future__ import annotations

from pathlib import Path

import pytest

from eos.testing.helpers import create_topic, produce, read_topic, unique_name, wait_caught_up
from eos.testing.process import AppProcess
from eos.testing.verify import verify_exactly_once

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

HERE = Path(__file__).resolve().parent
EXAMPLE = str(HERE.parents[1] / "examples" / "uppercase.py")
FAULT_APP = str(HERE / "fault_app.py")
# Longer than the 60 s the old assignment callback waited for committed offsets.
DEAD_OWNER_TRANSACTION_TIMEOUT_MS = 66_000


def test_new_owner_waits_out_pending_offsets_of_a_dead_owner(bootstrap, tmp_path) -> None:
    """Instance A is SIGKILLed after sending its offsets into a transaction (the group
    coordinator holds them pending until that transaction is aborted, after A's
    transaction.timeout.ms of 66 s). Instance B, a different instance, takes A's partitions:
    its assignment does not fail on the pending offsets (no committed() call that times out);
    it waits for them and then processes every input exactly once."""
    source = create_topic(bootstrap, unique_name("in"), 2)
    sink = create_topic(bootstrap, unique_name("out"), 2)
    app_id = unique_name("pending")
    produce(bootstrap, source, ((f"k{i % 7}", f"v{i:05d}") for i in range(3000)))
    common = ["--bootstrap-servers", bootstrap, "--input", source, "--output", sink]
    common += ["--application-id", app_id, "--session-timeout-ms", "6000"]
    a = AppProcess(
        [
            FAULT_APP, "uppercase", "--crash-before-commit", "3", "--",
            *common,
            "--instance-id", "a",
            "--max-batch-records", "500",
            "--transaction-timeout-ms", str(DEAD_OWNER_TRANSACTION_TIMEOUT_MS),
        ],
        log_path=tmp_path / "a.log",
    ).start()  # fmt: skip
    assert a.wait(90) == -9, a.log_tail()
    produce(bootstrap, source, ((f"k{i % 7}", f"w{i:05d}") for i in range(1000)))
    b = AppProcess([EXAMPLE, *common, "--instance-id", "b"], log_path=tmp_path / "b.log").start()
    try:
        wait_caught_up(bootstrap, app_id, source, timeout=240)
        assert b.alive(), b.log_tail()
        assert b.terminate() == 0, b.log_tail()
    finally:
        b.kill()
    verdict = verify_exactly_once(
        read_topic(bootstrap, source), read_topic(bootstrap, sink), bytes.upper
    )
    print(f"B took over after A died mid-transaction: {verdict}")
    assert verdict.ok and verdict.inputs == 4000, verdict
