"""The window store: encoding, point and range reads, expiry by stream time."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import eos
from eos.errors import ConfigError, StateError
from eos.processor import Context
from eos.record import Record
from eos.state import StateStore, Store, StoreTransaction, open_backend
from eos.state._window_keys import decode_ts
from eos.state.window import (
    MAX_TIMESTAMP,
    MIN_TIMESTAMP,
    WindowStore,
    WindowStoreTransaction,
    encode_ts,
)
from eos.testing import TestDriver

Changelog = list[tuple[bytes, bytes | None]]


class CountingStore:
    """A backend wrapper that records the bounds of every iterate() call."""

    def __init__(self, inner: StateStore) -> None:
        self.inner = inner
        self.scans: list[tuple[bytes | None, bytes | None]] = []

    def get(self, key: bytes) -> bytes | None:
        return self.inner.get(key)

    def iterate(
        self, start: bytes | None = None, end: bytes | None = None, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        self.scans.append((start, end))
        return self.inner.iterate(start, end, reverse)

    def write(self, changes: Any, changelog_offset: int) -> None:
        self.inner.write(changes, changelog_offset)

    def changelog_offset(self) -> int | None:
        return self.inner.changelog_offset()

    def close(self) -> None:
        self.inner.close()

    def wipe(self) -> None:
        self.inner.wipe()


SPEC: WindowStore[str, Any] = WindowStore(
    "w", retention_ms=100, key_serde="string", value_serde="json"
)


class Harness:
    """A window store partition over a real backend, one transaction at a time."""

    def __init__(self, backend: StateStore, spec: WindowStore[str, Any] = SPEC) -> None:
        self.backend = CountingStore(backend)
        self.spec = spec
        self.changelog: Changelog = []
        self.wakes: list[int] = []
        self.offset = 0
        self.txn: StoreTransaction[Any, Any]
        self.view: WindowStoreTransaction[str, Any]
        self.begin()

    def begin(self) -> None:
        key_serde, value_serde = self.spec.serdes()
        self.txn = StoreTransaction(
            self.backend,
            key_serde,
            value_serde,
            lambda k, v: self.changelog.append((k, v)),
            name="w[0]",
        )
        self.view = self.spec.view(self.txn, self.wakes.append)

    def commit(self) -> None:
        self.offset += len(self.changelog) + 1
        self.txn.commit(self.offset)
        self.changelog.clear()
        self.wakes.clear()
        self.begin()


@pytest.fixture(params=["memory", "rocksdb"])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    backend = open_backend(Store("w", backend=request.param), str(tmp_path / "w"), 0)
    yield Harness(backend)
    backend.close()


NO_CTX: Context[Any, Any] = None  # type: ignore[assignment]
"""The base store's advance() does not use its ctx."""


# -- encoding -----------------------------------------------------------------


def test_timestamp_encoding_preserves_order_across_zero() -> None:
    """Encoded timestamps sort as the integers do, negatives first, and decode back."""
    times = [MIN_TIMESTAMP, -(10**12), -1, 0, 1, 59_999, 60_000, 10**13, MAX_TIMESTAMP]
    encoded = [encode_ts(t) for t in times]
    assert encoded == sorted(encoded)
    assert all(len(e) == 8 for e in encoded)
    assert [decode_ts(e) for e in encoded] == times


@pytest.mark.parametrize("bad", [MAX_TIMESTAMP + 1, MIN_TIMESTAMP - 1, 1.5, "1"])
def test_timestamp_out_of_range_is_a_state_error(bad: Any) -> None:
    """A window start outside int64 (or not an int) is refused with a StateError."""
    with pytest.raises(StateError, match="window timestamp"):
        encode_ts(bad)


# -- declaration --------------------------------------------------------------


def test_declaration_is_a_time_driven_store_with_bytes_serdes() -> None:
    """A WindowStore is a Store, time-driven, with bytes serdes for the engine."""
    spec = eos.WindowStore("clicks", retention_ms=60_000)
    assert isinstance(spec, Store)
    assert spec.time_driven is True
    assert spec.backend == "rocksdb"
    assert [type(s).__name__ for s in spec.serdes()] == ["BytesSerde", "BytesSerde"]
    assert [type(s).__name__ for s in spec.user_serdes()] == ["JsonSerde", "JsonSerde"]


@pytest.mark.parametrize("retention", [0, -5, 1.5, True, "10", None])
def test_invalid_retention_is_a_config_error(retention: Any) -> None:
    """retention_ms must be a positive int; the error names it."""
    with pytest.raises(ConfigError) as info:
        WindowStore("w", retention_ms=retention)
    assert info.value.key == "retention_ms"


def test_declaration_keeps_store_validation() -> None:
    """Store's own checks (name, backend, serde names) still apply."""
    with pytest.raises(ConfigError, match="store name"):
        WindowStore("bad/name", retention_ms=10)
    with pytest.raises(ConfigError, match="backend"):
        WindowStore("w", retention_ms=10, backend="nope")
    with pytest.raises(ConfigError):
        WindowStore("w", retention_ms=10, value_serde="nope")
    with pytest.raises(TypeError):
        WindowStore("w", "memory", retention_ms=10)  # type: ignore[misc]


# -- point reads and writes ---------------------------------------------------


def test_put_get_delete(harness: Harness) -> None:
    """Windows are independent per (key, start); None deletes; delete of nothing is a no-op."""
    view = harness.view
    view.put("a", 0, 1)
    view.put("a", 60, {"n": 2})
    view.put("b", 0, 3)
    assert view.get("a", 0) == 1
    assert view.get("a", 60) == {"n": 2}
    assert view.get("b", 0) == 3
    assert view.get("a", 30) is None
    assert view.get("a", 30, "none") == "none"
    view.put("a", 0, None)
    assert view.get("a", 0) is None
    view.delete("b", 0)
    view.delete("b", 0)
    assert view.get("b", 0, -1) == -1


def test_new_window_writes_data_and_index_update_writes_one_entry(harness: Harness) -> None:
    """Creating a window writes two changelog entries and wakes the engine at
    start + retention; updating it writes one entry and does not wake."""
    view = harness.view
    view.put("a", 1_000, 1)
    assert len(harness.changelog) == 2
    assert harness.wakes == [1_100]
    harness.commit()
    harness.view.put("a", 1_000, 2)
    harness.view.put("a", 1_000, 3)
    assert len(harness.changelog) == 2  # one per update
    assert harness.wakes == []
    assert harness.view.get("a", 1_000) == 3


def test_delete_writes_tombstones_for_data_and_index(harness: Harness) -> None:
    """Deleting a committed window produces two tombstones in the changelog."""
    harness.view.put("a", 5, 1)
    harness.commit()
    harness.view.delete("a", 5)
    assert [value for _, value in harness.changelog] == [None, None]
    harness.commit()
    assert list(harness.backend.iterate()) == []


# -- range reads ----------------------------------------------------------------


def test_fetch_is_inclusive_in_start_order_and_per_key(harness: Harness) -> None:
    """fetch(key, from, to) yields that key's windows with from <= start <= to, in
    start order, negatives included; a key that is a prefix of another does not
    see the other's windows."""
    view = harness.view
    for start in (30, -20, 10, 0, -5, 100):
        view.put("a", start, start)
    view.put("ab", 10, "other")
    view.put("", 10, "empty")
    assert list(view.fetch("a", -20, 30)) == [(-20, -20), (-5, -5), (0, 0), (10, 10), (30, 30)]
    assert list(view.fetch("a", -4, 29)) == [(0, 0), (10, 10)]
    assert list(view.fetch("a", 31, 99)) == []
    assert list(view.fetch("a", 30, -20)) == []
    assert list(view.fetch("ab", MIN_TIMESTAMP, MAX_TIMESTAMP)) == [(10, "other")]
    assert list(view.fetch("", MIN_TIMESTAMP, MAX_TIMESTAMP)) == [(10, "empty")]


def test_fetch_merges_committed_windows_with_this_transaction(harness: Harness) -> None:
    """fetch sees committed windows, this transaction's new and updated ones, and
    not the ones it deleted."""
    for start in (0, 10, 20, 30):
        harness.view.put("k", start, f"old{start}")
    harness.commit()
    view = harness.view
    view.put("k", 5, "new5")
    view.put("k", 20, "new20")
    view.delete("k", 10)
    view.put("k", 40, "new40")
    assert list(view.fetch("k", 0, 100)) == [
        (0, "old0"),
        (5, "new5"),
        (20, "new20"),
        (30, "old30"),
        (40, "new40"),
    ]
    harness.commit()
    assert list(harness.view.fetch("k", 0, 100)) == [
        (0, "old0"),
        (5, "new5"),
        (20, "new20"),
        (30, "old30"),
        (40, "new40"),
    ]


def test_fetch_is_a_range_read_of_the_key(harness: Harness) -> None:
    """fetch asks the backend for the key's range only, never a full scan."""
    harness.view.put("a", 0, 1)
    harness.view.put("b", 0, 1)
    harness.commit()
    harness.backend.scans.clear()
    list(harness.view.fetch("a", 0, 10))
    assert len(harness.backend.scans) == 1
    start, end = harness.backend.scans[0]
    assert start is not None and end is not None
    assert start.startswith(b"\x00\x00\x00\x00\x01a") and end.startswith(b"\x00\x00\x00\x00\x01a")


def test_writing_while_fetching_is_allowed(harness: Harness) -> None:
    """A fetch iterator keeps working while the windows it reads are rewritten."""
    for start in range(5):
        harness.view.put("a", start, start)
    harness.commit()
    view = harness.view
    for start, value in view.fetch("a", 0, 10):
        view.put("a", start, value * 10)
        view.put("a", start + 100, 0)
    assert [v for _, v in view.fetch("a", 0, 4)] == [0, 10, 20, 30, 40]


def test_fetch_all_in_start_order_across_keys(harness: Harness) -> None:
    """fetch_all yields (key, start, value) of every key in start order, bounds inclusive."""
    view = harness.view
    view.put("b", 10, 1)
    view.put("a", 20, 2)
    harness.commit()
    view = harness.view
    view.put("c", -10, 3)
    view.put("a", 10, 4)
    view.delete("a", 20)
    view.put("b", 30, 5)
    assert list(view.fetch_all(-10, 30)) == [
        ("c", -10, 3),
        ("a", 10, 4),
        ("b", 10, 1),
        ("b", 30, 5),
    ]
    assert list(view.fetch_all(0, 10)) == [("a", 10, 4), ("b", 10, 1)]
    assert list(view.fetch_all(31, 100)) == []
    assert list(view.fetch_all(30, -10)) == []


# -- expiry -------------------------------------------------------------------------


def test_next_due_is_the_oldest_start_plus_retention(harness: Harness) -> None:
    """next_due() is None when empty, else the smallest start + retention_ms, from
    committed and uncommitted windows alike."""
    assert harness.view.next_due() is None
    harness.view.put("a", 50, 1)
    assert harness.view.next_due() == 150
    harness.commit()
    harness.view.put("b", -30, 1)
    assert harness.view.next_due() == 70
    harness.view.delete("b", -30)
    assert harness.view.next_due() == 150


def test_advance_deletes_expired_windows_with_tombstones(harness: Harness) -> None:
    """advance(t) deletes exactly the windows with start + retention <= t, data
    and index, with changelog tombstones, and keeps the rest."""
    for key, start in (("a", -200), ("a", 0), ("b", 0), ("a", 1), ("b", 50)):
        harness.view.put(key, start, start)
    harness.commit()
    harness.view.advance(-101, NO_CTX)
    assert harness.changelog == []
    harness.view.advance(99, NO_CTX)
    assert len(harness.changelog) == 2  # the window at -200
    harness.view.advance(100, NO_CTX)
    assert len(harness.changelog) == 6 and all(v is None for _, v in harness.changelog)
    assert list(harness.view.fetch("a", MIN_TIMESTAMP, MAX_TIMESTAMP)) == [(1, 1)]
    assert harness.view.next_due() == 101
    harness.commit()
    assert dict(SPEC.decode_entries(harness.backend.iterate())) == {("a", 1): 1, ("b", 50): 50}
    harness.view.advance(10**6, NO_CTX)
    harness.commit()
    assert list(harness.backend.iterate()) == []
    assert harness.view.next_due() is None


def test_advance_reads_only_the_front_of_the_index(harness: Harness) -> None:
    """Expiry and next_due read the time index from its start up to the due bound,
    not the data entries."""
    for i in range(20):
        harness.view.put(f"k{i}", i * 10, i)
    harness.commit()
    harness.backend.scans.clear()
    harness.view.advance(105, NO_CTX)
    ((start, end),) = harness.backend.scans
    assert start == b"\x01" and end is not None and end.startswith(b"\x01")
    assert end == b"\x01" + encode_ts(6)


def test_advance_sees_windows_of_this_transaction(harness: Harness) -> None:
    """A window created and expired in the same transaction is deleted too."""
    harness.view.put("a", 0, 1)
    harness.view.advance(100, NO_CTX)
    assert harness.view.get("a", 0) is None
    assert harness.view.next_due() is None


def test_decode_entries_skips_the_index() -> None:
    """decode_entries yields ((key, start), value) for data entries only."""
    spec = WindowStore("w", retention_ms=5, key_serde="json", value_serde="string")
    backend = open_backend(Store("w", backend="memory"), "", 0)
    harness = Harness(backend, spec)  # type: ignore[arg-type]
    harness.view.put(["composite", 1], -7, "x")  # type: ignore[arg-type]
    harness.commit()
    assert list(spec.decode_entries(backend.iterate())) == [((["composite", 1], -7), "x")]


# -- through the TestDriver ---------------------------------------------------------


class LastPerWindow(eos.Processor):
    """Keeps the last value per key and 10 ms window (a hand-made tumbling window)."""

    stores = [eos.WindowStore("last", retention_ms=30, backend="memory")]

    def process(self, record: Record, ctx: Context) -> None:
        windows: WindowStoreTransaction[Any, Any] = ctx.store("last")  # type: ignore[assignment]
        start = record.timestamp - record.timestamp % 10
        windows.put(record.key, start, record.value)
        ctx.send(
            "out", [start, [v for _, v in windows.fetch(record.key, 0, start)]], key=record.key
        )


def test_window_store_in_a_processor_expires_with_stream_time() -> None:
    """Through the TestDriver, a processor's window store expires windows once
    stream time reaches start + retention_ms, and never before."""
    driver = TestDriver(LastPerWindow(), key_serde="string", value_serde="json")
    driver.send(1, key="a", timestamp=5)
    driver.send(2, key="a", timestamp=15)
    driver.send(3, key="b", timestamp=29)
    assert driver.store("last") == {("a", 0): 1, ("a", 10): 2, ("b", 20): 3}
    driver.send(4, key="b", timestamp=30)  # stream time 30: window 0 expires
    assert driver.store("last") == {("a", 10): 2, ("b", 20): 3, ("b", 30): 4}
    driver.send(5, key="a", timestamp=12)  # behind stream time: still written
    assert driver.store("last") == {("a", 10): 5, ("b", 20): 3, ("b", 30): 4}
    assert driver.output_pairs("out")[-1] == ("a", [10, [5]])
    driver.send(6, key="c", timestamp=55)
    assert driver.store("last") == {("b", 30): 4, ("c", 50): 6}
