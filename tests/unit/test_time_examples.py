"""examples/payments_per_minute.py and examples/sessions.py through the TestDriver.

Records carry their event timestamps; the tests check what each example
promises: one final record per window or session, sent when stream time
passes its end plus grace, records within the grace counted, later ones
dropped and counted as late (or dead-lettered), sessions merged by a record
that bridges them. Exactly-once across crashes is the engine's, proven
against a real broker (tests/integration/test_time.py, tests/chaos/).
"""

from __future__ import annotations

import importlib.util
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType

import pytest

import eos
from eos.runner import load_application
from eos.testing import TestDriver

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str) -> ModuleType:
    """examples/<name>.py as a module (examples/ is not on the test path)."""
    path = ROOT / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"examples_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


payments = _load("payments_per_minute")
sessions = _load("sessions")


def payments_driver(partitions: int = 1, **settings: object) -> TestDriver:
    """The payments topology reading ``payments``, writing ``per-minute``."""
    return TestDriver(
        payments.build("payments", "per-minute").build(),
        partitions=partitions,
        key_serde="string",
        value_serde="json",
        **settings,  # type: ignore[arg-type]
    )


def pay(driver: TestDriver, merchant: str, amount: object, at_ms: int) -> None:
    driver.send({"id": f"p-{at_ms}", "amount": amount}, key=merchant, timestamp=at_ms)


# -- payments_per_minute -------------------------------------------------------------


def test_a_minute_is_emitted_once_when_stream_time_passes_its_end_plus_grace() -> None:
    """Nothing is sent while the minute may still change; at end + 5 s exactly one record is."""
    driver = payments_driver()
    pay(driver, "m-1", 100, 1_000)
    pay(driver, "m-1", 250, 30_000)
    pay(driver, "m-1", 50, 59_999)
    pay(driver, "m-1", 10, 64_999)  # next minute; stream time 1 ms short of 60 s + 5 s
    assert driver.outputs("per-minute") == []
    pay(driver, "m-2", 10, 65_000)  # any merchant of the partition moves stream time
    assert driver.output_pairs("per-minute") == [
        ("m-1", {"start": 0, "end": 60_000, "n": 3, "total": 400}),
    ]
    pay(driver, "m-2", 10, 200_000)
    assert driver.output_pairs("per-minute")[1:] == [
        ("m-1", {"start": 60_000, "end": 120_000, "n": 1, "total": 10}),
        ("m-2", {"start": 60_000, "end": 120_000, "n": 1, "total": 10}),
    ]
    assert driver.store(payments.STORE) == {
        eos.Windowed("m-2", 180_000, 240_000): {"n": 1, "total": 10},
    }


def test_a_payment_within_the_grace_counts_and_a_later_one_is_dropped_as_late() -> None:
    """4 s late: still in its minute; after the minute closed: counted late, in no window."""
    driver = payments_driver()
    pay(driver, "m-1", 100, 10_000)
    pay(driver, "m-1", 200, 62_000)
    pay(driver, "m-1", 300, 58_000)  # behind stream time, within the 5 s grace
    pay(driver, "m-1", 400, 65_000)  # closes [0, 60 s)
    pay(driver, "m-1", 500, 59_000)  # its minute is closed
    assert driver.output_pairs("per-minute") == [
        ("m-1", {"start": 0, "end": 60_000, "n": 2, "total": 400}),
    ]
    assert driver.late_records == 1
    assert driver.store(payments.STORE) == {
        eos.Windowed("m-1", 60_000, 120_000): {"n": 2, "total": 600},
    }


def test_late_payments_are_dead_lettered_with_the_late_record_policy() -> None:
    """late_record_policy="dead_letter": the late payment's bytes go to the DLQ as a LateRecord."""
    driver = payments_driver(
        processing_error_policy="dead_letter",
        dead_letter_topic="payments-dlq",
        late_record_policy="dead_letter",
    )
    pay(driver, "m-1", 100, 10_000)
    pay(driver, "m-1", 200, 70_000)
    pay(driver, "m-1", 300, 20_000)
    [letter] = driver.outputs("payments-dlq")
    assert letter.raw_key == b"m-1"
    assert letter.raw_value == b'{"id":"p-20000","amount":300}'
    headers = dict(letter.headers or [])
    assert headers["eos.error.type"] == b"LateRecord"
    assert headers["eos.source.offset"] == b"2"
    assert driver.late_records == 1


def test_values_that_are_not_payments_are_skipped() -> None:
    """A tombstone, a missing, textual or boolean amount: not counted, no error."""
    driver = payments_driver()
    driver.send(None, key="m-1", timestamp=1_000)
    driver.send({"id": "p-x"}, key="m-1", timestamp=2_000)
    driver.send({"amount": "12"}, key="m-1", timestamp=3_000)
    driver.send({"amount": True}, key="m-1", timestamp=4_000)
    pay(driver, "m-1", 7, 5_000)
    pay(driver, "m-1", 1, 70_000)
    assert driver.output_values("per-minute") == [{"start": 0, "end": 60_000, "n": 1, "total": 7}]
    assert driver.errors == []


def test_the_sample_payments_give_one_exact_record_per_merchant_and_minute() -> None:
    """The `produce` sample, on 4 partitions: every sampled minute of every merchant is
    emitted exactly once, with the count and total a replay in Python computes."""
    samples = list(payments.sample_payments(0, minutes=5, merchants=4))
    driver = payments_driver(partitions=4)
    for merchant, payment, timestamp in samples:
        driver.send(payment, key=merchant, timestamp=timestamp)
    n: Counter[tuple[str, int]] = Counter()
    total: Counter[tuple[str, int]] = Counter()
    for merchant, payment, timestamp in samples:
        if timestamp < 5 * 60_000:
            window = (merchant, timestamp - timestamp % 60_000)
            n[window] += 1
            amount = payment["amount"]
            assert isinstance(amount, int)
            total[window] += amount
    emitted = {
        (merchant, value["start"]): (value["n"], value["total"])
        for merchant, value in driver.output_pairs("per-minute")
    }
    assert len(driver.output_pairs("per-minute")) == len(emitted) == len(n)
    assert emitted == {window: (n[window], total[window]) for window in n}
    assert driver.late_records == 0


# -- sessions -------------------------------------------------------------------------


def sessions_driver() -> TestDriver:
    """The sessions topology reading ``clicks``, writing ``sessions``."""
    return TestDriver(
        sessions.build("clicks", "sessions").build(), key_serde="string", value_serde="json"
    )


def click(driver: TestDriver, user: str, at_ms: int) -> None:
    driver.send({"page": "/"}, key=user, timestamp=at_ms)


def test_a_session_is_emitted_once_when_it_closes() -> None:
    """Clicks at most 30 s apart are one session; it closes when stream time passes
    its last click + 30 s gap + 5 s grace, and is sent once."""
    driver = sessions_driver()
    for t in (0, 10_000, 40_000):
        click(driver, "alice", t)
    click(driver, "bob", 75_000)  # 40 s + 35 s: not past it yet
    assert driver.outputs("sessions") == []
    click(driver, "bob", 75_001)
    assert driver.output_pairs("sessions") == [
        ("alice", {"start": 0, "end": 40_000, "clicks": 3}),
    ]
    click(driver, "carol", 500_000)
    assert driver.output_pairs("sessions")[1:] == [
        ("bob", {"start": 75_000, "end": 75_001, "clicks": 2}),
    ]


def test_a_gap_longer_than_30_s_starts_a_new_session() -> None:
    """30 s apart is one session; 30.001 s apart, two."""
    driver = sessions_driver()
    for t in (0, 30_000, 60_001):
        click(driver, "alice", t)
    click(driver, "bob", 1_000_000)
    assert driver.output_values("sessions") == [
        {"start": 0, "end": 30_000, "clicks": 2},
        {"start": 60_001, "end": 60_001, "clicks": 1},
    ]


def test_a_click_between_two_sessions_merges_them_into_one_final_record() -> None:
    """Two open sessions, then a click within 30 s of both: one session with every
    click, and only it is emitted (the merged-away sessions never are)."""
    driver = sessions_driver()
    for t in (0, 10_000, 41_000, 44_000):
        click(driver, "alice", t)
    assert driver.store(sessions.STORE) == {
        eos.Windowed("alice", 0, 10_000): 2,
        eos.Windowed("alice", 41_000, 44_000): 2,
    }
    click(driver, "alice", 25_000)  # 15 s after the first session, 16 s before the second
    assert driver.store(sessions.STORE) == {eos.Windowed("alice", 0, 44_000): 5}
    click(driver, "bob", 200_000)
    assert driver.output_pairs("sessions") == [
        ("alice", {"start": 0, "end": 44_000, "clicks": 5}),
    ]


def test_a_click_within_the_grace_still_extends_its_session() -> None:
    """Stream time is past the gap (the session would be closed without grace), not past
    the grace: a late click still joins the session."""
    driver = sessions_driver()
    click(driver, "alice", 0)
    click(driver, "bob", 32_000)  # past 0 + 30 s gap, within the 5 s grace
    click(driver, "alice", 29_000)
    click(driver, "bob", 500_000)
    assert driver.output_pairs("sessions")[0] == (
        "alice",
        {"start": 0, "end": 29_000, "clicks": 2},
    )
    assert driver.late_records == 0


def test_a_click_too_late_for_any_open_session_is_dropped_and_counted() -> None:
    """A click more than 35 s behind stream time is late: no session, counted;
    one just inside starts a session of its own."""
    driver = sessions_driver()
    click(driver, "alice", 0)
    click(driver, "bob", 100_000)  # alice's session closed
    click(driver, "alice", 64_999)  # 100 s - 35 s - 1 ms: late
    assert driver.late_records == 1
    click(driver, "alice", 65_000)  # its session would close at 100.001 s: open
    click(driver, "bob", 500_000)
    assert [v for k, v in driver.output_pairs("sessions") if k == "alice"] == [
        {"start": 0, "end": 0, "clicks": 1},
        {"start": 65_000, "end": 65_000, "clicks": 1},
    ]
    assert driver.late_records == 1


# -- runnable with eos run --------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "topic"),
    [
        ("examples.payments_per_minute:app", "payments"),
        ("examples.sessions:app", "clicks"),
    ],
)
def test_eos_run_loads_the_application(
    target: str, topic: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`eos run examples.X:app` finds an Application reading the example's topic."""
    monkeypatch.chdir(ROOT)
    monkeypatch.syspath_prepend(str(ROOT))
    app = load_application(target)
    assert app.config.input_topics == (topic,)
    assert (app.config.key_serde, app.config.value_serde) == ("string", "json")


@pytest.mark.parametrize(
    ("target", "topic"),
    [
        ("examples.payments_per_minute:builder", "payments"),
        ("examples.sessions:builder", "clicks"),
    ],
)
def test_eos_run_loads_the_builder_with_a_properties_file(
    target: str, topic: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`eos run examples.X:builder --config FILE` takes the input topic from the builder."""
    monkeypatch.chdir(ROOT)
    monkeypatch.syspath_prepend(str(ROOT))
    config = tmp_path / "app.properties"
    config.write_text("application.id=example\nbootstrap.servers=localhost:9092\n")
    app = load_application(target, config_path=str(config))
    assert app.config.input_topics == (topic,)
