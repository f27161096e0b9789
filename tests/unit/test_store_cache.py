"""The committed-value cache of a store partition: it only ever holds what the backend holds."""

from __future__ import annotations

from pathlib import Path

import pytest

from eos.errors import StateError
from eos.serde import resolve_serde
from eos.state import Store, StoreTransaction, open_backend
from eos.state import transaction as transaction_module


def _txn(backend: object, cache: dict[bytes, bytes | None]) -> StoreTransaction:
    return StoreTransaction(
        backend,  # type: ignore[arg-type]
        resolve_serde("string"),
        resolve_serde("json"),
        lambda _k, _v: None,
        name="counts[0]",
        cache=cache,
    )


@pytest.mark.parametrize("kind", ["memory", "rocksdb"])
def test_the_cache_follows_commits_and_ignores_aborts(kind: str, tmp_path: Path) -> None:
    """A read fills the cache from the backend (absence included), a commit puts its writes
    in, an aborted transaction's writes never reach it, and reads see committed values."""
    backend = open_backend(Store("counts", backend=kind), str(tmp_path / "s"), 0)
    backend.write({b"a": b"1"}, 5)
    cache: dict[bytes, bytes | None] = {}
    first = _txn(backend, cache)
    assert first.get("a") == 1 and first.get("b") is None
    assert cache == {b"a": b"1", b"b": None}
    first["a"] = 2
    first["b"] = 7
    first.commit(6)
    assert cache == {b"a": b"2", b"b": b"7"}
    aborted = _txn(backend, cache)
    aborted["a"] = 99
    del aborted["b"]
    aborted.abort()
    assert cache == {b"a": b"2", b"b": b"7"}
    third = _txn(backend, cache)
    assert third.get("a") == 2 and third.get("b") == 7
    del third["b"]
    third.commit(7)
    assert cache[b"b"] is None and _txn(backend, cache).get("b") is None
    assert backend.get(b"a") == b"2" and backend.get(b"b") is None
    backend.close()


def test_the_cache_is_bounded_and_cleared_when_a_backend_write_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past CACHE_ENTRIES the oldest entries go; a failed backend write empties the cache
    (the backend's state is unknown then)."""
    monkeypatch.setattr(transaction_module, "CACHE_ENTRIES", 3)

    class Backend:
        fail = False

        def get(self, key: bytes) -> bytes | None:
            return None

        def write(self, items: object, offset: int) -> None:
            if self.fail:
                raise OSError("disk full")

    backend = Backend()
    cache: dict[bytes, bytes | None] = {}
    txn = _txn(backend, cache)
    for key in "abcde":
        txn.get(key)
    assert list(cache) == [b"c", b"d", b"e"]
    txn["x"] = 1
    txn["y"] = 2
    txn.commit(1)
    assert list(cache) == [b"e", b"x", b"y"]
    backend.fail = True
    failing = _txn(backend, cache)
    failing["z"] = 3
    with pytest.raises(StateError):
        failing.commit(2)
    assert cache == {}
