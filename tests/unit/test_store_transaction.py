"""The per-transaction overlay: reads, writes, changelog, commit, abort, lifecycle."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from eos.errors import SerializationError, StateError
from eos.serde import resolve_serde
from eos.state import (
    MemoryStore,
    StateStore,
    Store,
    StoreTransaction,
    TransactionState,
    open_backend,
)

Changelog = list[tuple[bytes, bytes | None]]


@pytest.fixture(params=["memory", "rocksdb"])
def base(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    store = open_backend(Store("txn", backend=request.param), str(tmp_path / "txn"), 0)
    yield store
    store.close()


@pytest.fixture
def changelog() -> Changelog:
    return []


def make_txn(base: StateStore, changelog: Changelog, serde: str = "string") -> StoreTransaction:
    return StoreTransaction(
        base,
        resolve_serde(serde),
        resolve_serde(serde),
        lambda key, value: changelog.append((key, value)),
        name="txn[0]",
    )


@pytest.fixture
def txn(base: StateStore, changelog: Changelog) -> StoreTransaction:
    """A string-serde transaction over a base holding a=1, c=3, e=5 at checkpoint 10."""
    base.write({b"a": b"1", b"c": b"3", b"e": b"5"}, 10)
    return make_txn(base, changelog)


def test_reads_see_own_writes_before_commit(txn: StoreTransaction, base: StateStore) -> None:
    """A write is visible through the transaction at once but not in the backend."""
    txn["b"] = "2"
    txn["a"] = "one"
    assert txn["b"] == "2"
    assert txn.get("a") == "one"
    assert "b" in txn
    assert base.get(b"b") is None
    assert base.get(b"a") == b"1"


def test_reads_fall_through_to_backend(txn: StoreTransaction) -> None:
    """Keys the transaction did not touch read from the backend."""
    assert txn["c"] == "3"
    assert txn.get("missing") is None
    assert txn.get("missing", "dflt") == "dflt"
    assert "missing" not in txn
    with pytest.raises(KeyError):
        txn["missing"]


def test_delete_hides_backend_key(txn: StoreTransaction) -> None:
    """Deleting a backend key hides it from reads, membership and iteration."""
    del txn["c"]
    assert "c" not in txn
    assert txn.get("c", "gone") == "gone"
    with pytest.raises(KeyError):
        txn["c"]
    assert list(txn) == ["a", "e"]


def test_delete_missing_key_raises_keyerror_without_changelog(
    txn: StoreTransaction, changelog: Changelog
) -> None:
    """Deleting an absent (or already deleted) key is a KeyError and produces no tombstone."""
    with pytest.raises(KeyError):
        del txn["missing"]
    del txn["a"]
    with pytest.raises(KeyError):
        del txn["a"]
    assert changelog == [(b"a", None)]


def test_write_after_delete_restores_key(txn: StoreTransaction) -> None:
    """A key deleted and then written again in the same transaction is present."""
    del txn["a"]
    txn["a"] = "again"
    assert txn["a"] == "again"
    assert next(txn.items()) == ("a", "again")


def test_iteration_merges_overlay_and_backend_in_order(txn: StoreTransaction) -> None:
    """Iteration interleaves overlay and backend keys in byte order, overlay winning."""
    txn["b"] = "2"
    txn["c"] = "three"
    del txn["e"]
    txn["f"] = "6"
    txn["0"] = "zero"
    assert list(txn.items()) == [("0", "zero"), ("a", "1"), ("b", "2"), ("c", "three"), ("f", "6")]
    assert list(txn.keys()) == ["0", "a", "b", "c", "f"]
    assert list(txn.values()) == ["zero", "1", "2", "three", "6"]
    assert list(txn) == ["0", "a", "b", "c", "f"]


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize(
    ("start", "end"),
    [(None, None), ("a", "e"), ("b", None), (None, "c"), ("bb", "f"), ("c", "c")],
)
def test_range_matches_dict_model(
    txn: StoreTransaction, start: str | None, end: str | None, reverse: bool
) -> None:
    """range() equals a sorted, bounded view of a dict model, in both directions."""
    model = {"a": "1", "c": "3", "e": "5"}
    for key, value in [("b", "2"), ("c", "three"), ("d", "4"), ("z", "26")]:
        txn[key] = value
        model[key] = value
    del txn["e"]
    del model["e"]
    expected = sorted(
        (k, v)
        for k, v in model.items()
        if (start is None or k >= start) and (end is None or k < end)
    )
    if reverse:
        expected.reverse()
    assert list(txn.range(start, end, reverse=reverse)) == expected


def test_iteration_sees_snapshot_and_allows_writes(txn: StoreTransaction) -> None:
    """Writing while iterating is allowed; the running iterator keeps its starting view."""
    txn["b"] = "2"
    seen = []
    for key in txn:
        seen.append(key)
        txn["bb"] = "new"
    assert seen == ["a", "b", "c", "e"]
    assert "bb" in txn


def test_changelog_gets_exact_bytes_and_tombstones(base: StateStore, changelog: Changelog) -> None:
    """Each write calls the changelog once with the serialized key and value; deletes send None."""
    txn = make_txn(base, changelog, serde="json")
    txn["k"] = {"n": 1}
    txn[7] = [1, 2]
    del txn["k"]
    txn["v"] = None  # a value serializing to None is a delete, as in Kafka Streams
    assert changelog == [
        (b'"k"', b'{"n":1}'),
        (b"7", b"[1,2]"),
        (b'"k"', None),
        (b'"v"', None),
    ]
    assert "v" not in txn


def test_changelog_failure_leaves_overlay_unchanged(base: StateStore) -> None:
    """If producing the changelog record fails, the overlay does not record the write."""

    def failing(key: bytes, value: bytes | None) -> None:
        raise BufferError("queue full")

    txn = StoreTransaction(base, resolve_serde("string"), resolve_serde("string"), failing)
    with pytest.raises(BufferError):
        txn["k"] = "v"
    assert "k" not in txn
    assert not txn.dirty


def test_commit_writes_overlay_and_checkpoint(txn: StoreTransaction, base: StateStore) -> None:
    """commit() applies puts and deletes to the backend with the checkpoint, then completes."""
    txn["b"] = "2"
    del txn["a"]
    txn.commit(17)
    assert txn.state is TransactionState.COMPLETE
    assert base.changelog_offset() == 17
    assert list(base.iterate()) == [(b"b", b"2"), (b"c", b"3"), (b"e", b"5")]


def test_commit_without_writes_still_advances_checkpoint(
    txn: StoreTransaction, base: StateStore
) -> None:
    """A transaction with no writes still stores the checkpoint it is given."""
    assert not txn.dirty
    txn.commit(11)
    assert base.changelog_offset() == 11


def test_abort_drops_everything(txn: StoreTransaction, base: StateStore) -> None:
    """abort() leaves the backend data and checkpoint exactly as before."""
    txn["b"] = "2"
    del txn["a"]
    txn.abort()
    assert txn.state is TransactionState.FAILED
    assert not txn.dirty
    assert list(base.iterate()) == [(b"a", b"1"), (b"c", b"3"), (b"e", b"5")]
    assert base.changelog_offset() == 10


def test_dirty_tracks_pending_writes(txn: StoreTransaction) -> None:
    """dirty is False until the first write and False again after commit."""
    assert not txn.dirty
    txn["x"] = "1"
    assert txn.dirty
    txn.commit(11)
    assert not txn.dirty


USES: dict[str, Callable[[StoreTransaction], object]] = {
    "get": lambda t: t.get("a"),
    "getitem": lambda t: t["a"],
    "contains": lambda t: "a" in t,
    "setitem": lambda t: t.__setitem__("a", "x"),
    "delitem": lambda t: t.__delitem__("a"),
    "items": lambda t: t.items(),
    "keys": lambda t: t.keys(),
    "iter": lambda t: iter(t),
    "range": lambda t: t.range("a", "z"),
    "prepare": lambda t: t.prepare(),
    "commit": lambda t: t.commit(99),
}


@pytest.mark.parametrize("finish", ["commit", "abort"])
@pytest.mark.parametrize("use", list(USES))
def test_finished_transaction_refuses_use(
    txn: StoreTransaction, base: StateStore, finish: str, use: str
) -> None:
    """Every read, write or transition on a committed or aborted transaction is a StateError."""
    if finish == "commit":
        txn.commit(11)
    else:
        txn.abort()
    with pytest.raises(StateError):
        USES[use](txn)
    assert base.changelog_offset() == (11 if finish == "commit" else 10)


def test_abort_after_commit_is_refused_and_abort_is_idempotent(
    base: StateStore, changelog: Changelog
) -> None:
    """A committed transaction cannot be aborted; aborting an aborted one does nothing."""
    committed = make_txn(base, changelog)
    committed.commit(1)
    with pytest.raises(StateError, match="complete"):
        committed.abort()
    aborted = make_txn(base, changelog)
    aborted.abort()
    aborted.abort()
    assert aborted.state is TransactionState.FAILED


def test_prepared_refuses_writes_allows_reads_and_commit(
    txn: StoreTransaction, base: StateStore
) -> None:
    """After prepare() writes are refused but reads and commit still work."""
    txn["b"] = "2"
    txn.prepare()
    assert txn.state is TransactionState.PREPARED
    with pytest.raises(StateError, match="prepared"):
        txn["x"] = "1"
    with pytest.raises(StateError, match="prepared"):
        del txn["a"]
    assert txn["b"] == "2"
    assert list(txn) == ["a", "b", "c", "e"]
    txn.commit(12)
    assert base.get(b"b") == b"2"


class _BrokenStore(MemoryStore):
    def write(self, changes: Mapping[bytes, bytes | None], changelog_offset: int) -> None:
        raise OSError("disk full")


def test_failed_backend_write_fails_transaction(changelog: Changelog) -> None:
    """A backend error during commit is a StateError and leaves the transaction FAILED."""
    txn = make_txn(_BrokenStore(), changelog)
    txn["k"] = "v"
    with pytest.raises(StateError, match="disk full"):
        txn.commit(1)
    assert txn.state is TransactionState.FAILED
    with pytest.raises(StateError):
        txn.get("k")


def test_key_serializing_to_none_is_state_error(base: StateStore, changelog: Changelog) -> None:
    """A None key (which the JSON serde maps to no bytes) cannot be stored or read."""
    txn = make_txn(base, changelog, serde="json")
    with pytest.raises(StateError, match="serialized to None"):
        txn[None] = 1
    with pytest.raises(StateError, match="serialized to None"):
        txn.get(None)
    assert changelog == []


def test_json_keys_iterate_in_serialized_byte_order(base: StateStore, changelog: Changelog) -> None:
    """With the JSON serde, keys order by their JSON bytes: 10 before 9, numbers before strings."""
    txn = make_txn(base, changelog, serde="json")
    for key in [9, "a", 10, 100, -1]:
        txn[key] = key
    txn.commit(5)
    txn = make_txn(base, changelog, serde="json")
    txn[2] = 2
    # '"' (0x22) and '-' (0x2d) sort before digits; then b"10" < b"100" < b"2" < b"9".
    assert list(txn.keys()) == ["a", -1, 10, 100, 2, 9]
    assert list(txn.range(10, 9)) == [(10, 10), (100, 100), (2, 2)]


# -- the inlined per-record paths (bytes keys, JSON integers, deferred writes) --------


class _Counter:
    sends = 0


def _fast_txn(base: StateStore, counter: _Counter) -> StoreTransaction:
    """Bytes keys, JSON values, no changelog writer: the engine's fast-path transaction."""
    return StoreTransaction(
        base,
        resolve_serde("bytes"),
        resolve_serde("json"),
        None,
        name="fast[0]",
        cache={},
        counter=counter,
    )


@pytest.mark.parametrize(
    "value",
    [0, 7, -3, 10**17, 10**18, -(10**18), 10**30, True, False, 1.5, "12", [1, 2], {"n": 1}, None],
)
def test_json_values_round_trip_through_overlay_cache_and_backend(
    base: StateStore, value: object
) -> None:
    """Whatever path a read takes (the overlay, the committed cache, the backend) and
    whichever encoding a write takes (the integer fast path or the serde), a JSON value
    reads back equal and of the same type, and the bytes are the serde's own."""
    counter = _Counter()
    txn = _fast_txn(base, counter)
    txn[b"k"] = value
    expected = json.loads(json.dumps(value, separators=(",", ":")))
    stored = txn.pending()[b"k"]
    assert stored == (None if value is None else json.dumps(value, separators=(",", ":")).encode())
    if value is None:  # a value serializing to None deletes
        assert txn.get(b"k", "absent") == "absent"
        return
    assert txn.get(b"k") == expected and type(txn.get(b"k")) is type(expected)
    txn.commit(1)
    cache: dict[bytes, bytes | None] = {}
    for _ in range(2):  # from the backend (filling the cache), then from the cache
        again = StoreTransaction(
            base, resolve_serde("bytes"), resolve_serde("json"), None, cache=cache, counter=counter
        )
        assert again.get(b"k") == expected and type(again.get(b"k")) is type(expected)
        assert again[b"k"] == expected
        again.abort()


@pytest.mark.parametrize("raw", [b"007", b"-0", b" 1", b"1e3", b"\xd9\xa0", b"0" * 19 + b"1"])
def test_json_integer_fast_path_leaves_other_bytes_to_the_serde(
    base: StateStore, raw: bytes
) -> None:
    """Bytes that only look like an integer are decoded (or refused) by json, as before."""
    base.write({b"k": raw}, 1)
    txn = _fast_txn(base, _Counter())
    try:
        expected: object = json.loads(raw)
    except ValueError:
        with pytest.raises(SerializationError):
            txn.get(b"k")
        return
    assert txn.get(b"k") == expected


def test_bytes_key_fast_path_still_refuses_other_keys(base: StateStore) -> None:
    """The bytes serde's type check still applies to keys that are not bytes."""
    txn = _fast_txn(base, _Counter())
    txn[bytearray(b"k")] = 1  # the serde accepts it, as bytes
    assert txn.get(b"k") == 1
    for key in ("k", 1):
        with pytest.raises(SerializationError):
            txn[key] = 1
        with pytest.raises(SerializationError):
            txn.get(key)
    with pytest.raises(StateError):
        txn[None] = 1  # serializes to None


def test_deferred_writes_count_on_the_counter_and_wait_for_the_commit(base: StateStore) -> None:
    """Without a changelog writer every write and delete counts once (the engine's 'this
    record wrote something'), and pending() holds each key's last value for the commit."""
    base.write({b"old": b"1"}, 1)
    counter = _Counter()
    txn = _fast_txn(base, counter)
    txn[b"a"] = 1
    txn[b"a"] = 2
    del txn[b"old"]
    assert counter.sends == 3
    assert txn.pending() == {b"a": b"2", b"old": None}
    with pytest.raises(KeyError):
        del txn[b"never"]
    assert counter.sends == 3


def test_integers_written_wait_decoded_until_the_commit_encodes_them(base: StateStore) -> None:
    """On the engine's path (no changelog writer) a JSON integer is kept as it is: every
    read of this transaction sees it (get, [], in, ordered scans), pending() and the
    commit encode it to the serde's own bytes, once; other values are encoded at once."""
    counter = _Counter()
    txn = _fast_txn(base, counter)
    txn[b"n"] = 41
    txn[b"n"] = txn.get(b"n", 0) + 1
    txn[b"big"] = 10**30  # beyond the fast path: the serde encodes it at the write
    txn[b"s"] = "x"
    assert counter.sends == 4
    assert txn.get(b"n") == 42 and txn[b"n"] == 42 and b"n" in txn
    assert dict(txn.items()) == {b"big": 10**30, b"n": 42, b"s": "x"}
    assert txn.pending() == {b"n": b"42", b"big": b"1" + b"0" * 30, b"s": b'"x"'}
    txn.commit(3)
    assert base.get(b"n") == b"42" and base.changelog_offset() == 3
    again = _fast_txn(base, counter)
    assert again.get(b"n") == 42
    again[b"m"] = 5
    again.commit(4)  # commit() encodes what pending() was not asked for
    assert base.get(b"m") == b"5"


def test_the_committed_cache_keeps_integers_decoded_and_drops_overwritten_ones(
    base: StateStore,
) -> None:
    """A commit leaves a written integer in the cache as the int itself, which the next
    transaction reads without decoding; a key encoded early (a range scan) and then
    overwritten with another kind of value, or deleted, is cached as what it became."""
    cache: dict[bytes, bytes | int | None] = {}
    counter = _Counter()

    def txn() -> StoreTransaction:
        return StoreTransaction(
            base, resolve_serde("bytes"), resolve_serde("json"), None, cache=cache, counter=counter
        )

    first = txn()
    first[b"a"] = 1
    first[b"b"] = 2
    first[b"c"] = 3
    assert list(first.range()) == [(b"a", 1), (b"b", 2), (b"c", 3)]  # encodes a, b, c early
    first[b"a"] = 10  # an int again
    first[b"b"] = "two"  # no longer an int
    del first[b"c"]
    first.commit(1)
    assert cache == {b"a": 10, b"b": b'"two"', b"c": None}
    assert base.get(b"a") == b"10" and base.get(b"b") == b'"two"' and base.get(b"c") is None
    second = txn()
    assert second.get(b"a") == 10 and second[b"a"] == 10 and b"a" in second
    assert second.get(b"b") == "two" and second.get(b"c", "gone") == "gone"
    assert second.get(b"d", 0) == 0
    second.abort()


def test_a_prepared_transaction_encodes_once_for_the_changelog_and_the_commit(
    base: StateStore,
) -> None:
    """The engine's commit: prepare, pending() for the changelog, commit(). The encoded
    writes are made once and are exactly what the backend gets; the cache keeps the
    integers decoded; a write after prepare() is refused and changes nothing."""
    cache: dict[bytes, bytes | int | None] = {}
    txn = StoreTransaction(
        base, resolve_serde("bytes"), resolve_serde("json"), None, cache=cache, counter=_Counter()
    )
    txn[b"n"] = 7
    txn[b"s"] = "x"
    txn.prepare()
    pending = txn.pending()
    assert pending == {b"n": b"7", b"s": b'"x"'}
    assert txn.pending() is pending
    with pytest.raises(StateError, match="prepared"):
        txn[b"n"] = 8
    assert txn.get(b"n") == 7
    txn.commit(5)
    assert base.get(b"n") == b"7" and base.get(b"s") == b'"x"' and base.changelog_offset() == 5
    assert cache == {b"n": 7, b"s": b'"x"'}


def test_a_transaction_needs_a_writer_or_a_counter(base: StateStore) -> None:
    with pytest.raises(ValueError, match="counter"):
        StoreTransaction(base, resolve_serde("bytes"), resolve_serde("json"), None)
