"""Applying changelog chunks and reporting restore progress."""

from __future__ import annotations

import pytest

from eos.errors import StateError
from eos.state import MemoryStore, RestoreProgress, apply_changelog


def test_chunk_applies_last_write_per_key_and_tombstones() -> None:
    """A chunk leaves each key at its last changelog value and removes tombstoned keys."""
    store = MemoryStore()
    store.write({b"old": b"x"}, 3)
    records = [(b"a", b"1"), (b"b", b"1"), (b"a", b"2"), (b"old", None), (b"b", None), (b"b", b"3")]
    apply_changelog(store, records, next_offset=12)
    assert list(store.iterate()) == [(b"a", b"2"), (b"b", b"3")]
    assert store.changelog_offset() == 12


def test_replaying_a_chunk_is_idempotent() -> None:
    """Applying the same chunk twice gives the same data and checkpoint as applying it once."""
    records = [(b"a", b"1"), (b"b", b"2"), (b"a", None)]
    once, twice = MemoryStore(), MemoryStore()
    apply_changelog(once, records, 5)
    apply_changelog(twice, records, 5)
    apply_changelog(twice, iter(records), 5)
    assert list(once.iterate()) == list(twice.iterate())
    assert once.changelog_offset() == twice.changelog_offset() == 5


def test_empty_chunk_advances_checkpoint() -> None:
    """A chunk with no records (only transaction markers) still moves the checkpoint."""
    store = MemoryStore()
    apply_changelog(store, [], 8)
    assert store.changelog_offset() == 8


def test_record_without_key_is_state_error_and_writes_nothing() -> None:
    """A keyless changelog record rejects the whole chunk without touching the store."""
    store = MemoryStore()
    records: list[tuple[bytes | None, bytes | None]] = [(b"a", b"1"), (None, b"x")]
    with pytest.raises(StateError, match="without a key"):
        apply_changelog(store, records, 3)  # type: ignore[arg-type]
    assert store.get(b"a") is None
    assert store.changelog_offset() is None


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_format_with_target() -> None:
    """format() shows count, target, rate and ETA in the documented shape."""
    clock = FakeClock()
    progress = RestoreProgress("order-counts", 2, target=50_000, clock=clock)
    progress.add(10_000)
    progress.add(2_000)
    clock.now += 0.5
    assert progress.rate == pytest.approx(24_000)
    assert progress.format() == "order-counts[2]: 12,000/50,000 records (24,000/s, ETA 1.6s)"


def test_progress_without_target_or_time() -> None:
    """Without a target there is no ETA; before any time passes the rate is 0."""
    clock = FakeClock()
    progress = RestoreProgress("s", 0, clock=clock)
    progress.add(5)
    assert progress.eta is None
    assert progress.format() == "s[0]: 5 records (0/s)"


@pytest.mark.parametrize(
    ("restored", "seconds", "eta_text"),
    [(100, 1.0, "ETA 16m40s"), (1, 1.0, "ETA 27h48m"), (200_000, 1.0, "ETA 0.0s")],
)
def test_progress_eta_units(restored: int, seconds: float, eta_text: str) -> None:
    """Long ETAs are shown in minutes or hours; overshooting the target shows zero."""
    clock = FakeClock()
    progress = RestoreProgress("s", 0, target=100_100, clock=clock)
    progress.add(restored)
    clock.now += seconds
    assert progress.format().endswith(f"{eta_text})")


@pytest.mark.parametrize(
    ("code", "retriable", "transient"),
    [
        ("FENCED_LEADER_EPOCH", False, True),  # a leader moved in a broker bounce
        ("NOT_LEADER_FOR_PARTITION", False, True),
        ("LEADER_NOT_AVAILABLE", False, True),
        ("_TIMED_OUT", False, True),
        # a changelog just created by another instance: librdkafka flags it retriable
        ("UNKNOWN_TOPIC_OR_PART", True, True),
        ("TOPIC_AUTHORIZATION_FAILED", False, False),
        ("INVALID_REQUEST", False, False),
    ],
)
def test_restore_offset_lookups_retry_leader_moves_not_denials(
    code: str, retriable: bool, transient: bool
) -> None:
    """list_offsets of a restore retries what a broker bounce causes (with a metadata
    refresh), and fails at once on what retrying cannot fix."""
    from confluent_kafka import KafkaError, KafkaException

    from eos.state.changelog import _transient

    error = KafkaError(getattr(KafkaError, code), retriable=retriable)
    assert _transient(KafkaException(error)) is transient
