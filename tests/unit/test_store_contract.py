"""One contract suite for every StateStore backend (memory and RocksDB)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from eos.errors import StateError
from eos.state import StateStore, Store, open_backend

BACKENDS = ["memory", "rocksdb"]

Opener = Callable[[], StateStore]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def opener(backend: str, tmp_path: Path) -> Iterator[Opener]:
    """Open (or reopen) the same store partition; closes everything at the end."""
    opened: list[StateStore] = []
    spec = Store("contract", backend=backend)

    def open_store() -> StateStore:
        store = open_backend(spec, str(tmp_path / "contract" / "3"), 3)
        opened.append(store)
        return store

    yield open_store
    for store in opened:
        store.close()


@pytest.fixture
def store(opener: Opener) -> StateStore:
    return opener()


def keys_of(store: StateStore, *args: object, **kwargs: object) -> list[bytes]:
    return [key for key, _ in store.iterate(*args, **kwargs)]  # type: ignore[arg-type]


# Unsorted, and chosen so that signed-byte or length-first ordering would differ.
KEYS = [b"b", b"\xff", b"a", b"\x80", b"ab", b"\x7f", b"\x00", b"a\x00", b"\xff\x00"]
SORTED = sorted(KEYS)


@pytest.fixture
def filled(store: StateStore) -> StateStore:
    store.write({key: b"v" + key for key in KEYS}, changelog_offset=1)
    return store


def test_implements_protocol(store: StateStore) -> None:
    """Every backend satisfies the runtime-checkable StateStore protocol."""
    assert isinstance(store, StateStore)


def test_get_missing_is_none(store: StateStore) -> None:
    """A key never written reads as None."""
    assert store.get(b"nope") is None


def test_put_then_get(store: StateStore) -> None:
    """A written value reads back byte for byte, including an empty value."""
    store.write({b"k": b"\x00value\xff", b"empty": b""}, changelog_offset=5)
    assert store.get(b"k") == b"\x00value\xff"
    assert store.get(b"empty") == b""


def test_delete_removes_key(filled: StateStore) -> None:
    """A None value in write() deletes the key from reads and iteration."""
    filled.write({b"a": None}, changelog_offset=2)
    assert filled.get(b"a") is None
    assert b"a" not in keys_of(filled)


def test_delete_of_missing_key_is_harmless(store: StateStore) -> None:
    """Deleting a key that does not exist succeeds and changes nothing else."""
    store.write({b"x": b"1"}, changelog_offset=1)
    store.write({b"nope": None}, changelog_offset=2)
    assert keys_of(store) == [b"x"]


def test_overwrite_replaces_value(store: StateStore) -> None:
    """A second put of the same key replaces the value without duplicating the key."""
    store.write({b"k": b"1"}, changelog_offset=1)
    store.write({b"k": b"2"}, changelog_offset=2)
    assert store.get(b"k") == b"2"
    assert list(store.iterate()) == [(b"k", b"2")]


def test_iterate_orders_by_unsigned_bytes(filled: StateStore) -> None:
    """Iteration yields every pair in unsigned lexicographic byte order."""
    assert list(filled.iterate()) == [(key, b"v" + key) for key in SORTED]


def test_iterate_reverse(filled: StateStore) -> None:
    """reverse=True yields the same pairs from the highest key down."""
    assert keys_of(filled, reverse=True) == SORTED[::-1]


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (b"a", b"b"),  # both bounds present as keys
        (b"a\x00", b"\x80"),  # start present, end present
        (b"0", b"az"),  # neither present
        (None, b"ab"),
        (b"ab", None),
        (b"\x00", b"\x00"),  # empty: start == end
        (b"b", b"a"),  # empty: start > end
        (b"\xff\xff", None),  # past the last key
        (None, b"\x00"),  # before the first key
    ],
)
@pytest.mark.parametrize("reverse", [False, True])
def test_iterate_bounds(
    filled: StateStore, start: bytes | None, end: bytes | None, reverse: bool
) -> None:
    """Bounds are start-inclusive and end-exclusive in both directions."""
    expected = [
        key for key in SORTED if (start is None or key >= start) and (end is None or key < end)
    ]
    if reverse:
        expected.reverse()
    assert keys_of(filled, start, end, reverse) == expected


def test_checkpoint_is_none_before_first_write(store: StateStore) -> None:
    """A fresh store has no checkpoint, so the engine restores from the start."""
    assert store.changelog_offset() is None


def test_write_applies_data_and_checkpoint_together(filled: StateStore) -> None:
    """One write() applies puts, deletes and the checkpoint, all visible afterwards."""
    filled.write({b"new": b"1", b"a": None, b"b": b"changed"}, changelog_offset=42)
    assert filled.changelog_offset() == 42
    assert filled.get(b"new") == b"1"
    assert filled.get(b"a") is None
    assert filled.get(b"b") == b"changed"


def test_empty_write_still_advances_checkpoint(store: StateStore) -> None:
    """A write with no changes still records the new checkpoint."""
    store.write({}, changelog_offset=7)
    assert store.changelog_offset() == 7


def test_large_checkpoint_round_trips(store: StateStore) -> None:
    """Checkpoints up to the largest Kafka offset (int64 max) round-trip."""
    store.write({}, changelog_offset=2**63 - 1)
    assert store.changelog_offset() == 2**63 - 1


def test_negative_checkpoint_is_rejected(store: StateStore) -> None:
    """A negative checkpoint is a StateError and writes nothing."""
    with pytest.raises(StateError, match="changelog offset"):
        store.write({b"k": b"v"}, changelog_offset=-1)
    assert store.get(b"k") is None
    assert store.changelog_offset() is None


def test_checkpoint_never_visible_as_data(store: StateStore) -> None:
    """The checkpoint never shows up in iteration or reads, even under its own key name."""
    store.write({b"changelog_offset": b"user"}, changelog_offset=9)
    assert list(store.iterate()) == [(b"changelog_offset", b"user")]
    assert list(store.iterate(reverse=True)) == [(b"changelog_offset", b"user")]
    assert store.get(b"changelog_offset") == b"user"
    assert store.changelog_offset() == 9


def test_state_survives_reopen(backend: str, opener: Opener) -> None:
    """Data and checkpoint persist across close and reopen of a persistent backend."""
    if backend == "memory":
        pytest.skip("the memory backend does not persist by design")
    store = opener()
    store.write({b"k": b"v", b"gone": b"x"}, changelog_offset=10)
    store.write({b"gone": None}, changelog_offset=11)
    store.close()
    reopened = opener()
    assert reopened.changelog_offset() == 11
    assert list(reopened.iterate()) == [(b"k", b"v")]


def test_memory_starts_empty_on_reopen(backend: str, opener: Opener) -> None:
    """A reopened memory store is empty with no checkpoint, forcing a full restore."""
    if backend != "memory":
        pytest.skip("memory backend behaviour")
    store = opener()
    store.write({b"k": b"v"}, changelog_offset=10)
    store.close()
    reopened = opener()
    assert reopened.changelog_offset() is None
    assert reopened.get(b"k") is None


def test_wipe_removes_data_and_checkpoint(filled: StateStore) -> None:
    """wipe() leaves an open, empty store with no checkpoint that accepts writes."""
    filled.wipe()
    assert list(filled.iterate()) == []
    assert filled.changelog_offset() is None
    filled.write({b"after": b"1"}, changelog_offset=1)
    assert filled.get(b"after") == b"1"


def test_wipe_persists_across_reopen(backend: str, opener: Opener) -> None:
    """A wiped persistent store stays empty after reopening."""
    if backend == "memory":
        pytest.skip("the memory backend does not persist by design")
    store = opener()
    store.write({b"k": b"v"}, changelog_offset=3)
    store.wipe()
    store.close()
    reopened = opener()
    assert reopened.changelog_offset() is None
    assert list(reopened.iterate()) == []


def test_close_is_idempotent(store: StateStore) -> None:
    """Closing twice is allowed."""
    store.close()
    store.close()


@pytest.mark.parametrize(
    "use",
    [
        lambda s: s.get(b"k"),
        lambda s: s.iterate(),
        lambda s: s.write({b"k": b"v"}, 1),
        lambda s: s.changelog_offset(),
        lambda s: s.wipe(),
    ],
    ids=["get", "iterate", "write", "changelog_offset", "wipe"],
)
def test_closed_store_raises_state_error(
    store: StateStore, use: Callable[[StateStore], object]
) -> None:
    """Every operation on a closed store is a StateError, not a crash or silent no-op."""
    store.close()
    with pytest.raises(StateError, match="closed"):
        use(store)
