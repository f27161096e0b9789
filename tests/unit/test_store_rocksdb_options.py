"""The RocksDB memory options of eos.Store: validation, what reaches RocksDB, sharing."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from eos.errors import ConfigError
from eos.state import rocksdb
from eos.state.base import (
    DEFAULT_ROCKSDB_BLOCK_CACHE_MB,
    DEFAULT_ROCKSDB_WRITE_BUFFER_MB,
    MAX_ROCKSDB_MB,
    Store,
    open_backend,
)
from eos.state.rocksdb import RocksDBStore


def _option(db_path: Path, section: str, name: str) -> str:
    """An option in one section of the OPTIONS file RocksDB wrote when it opened the db."""
    (options_file,) = sorted(db_path.glob("OPTIONS-*"))[-1:]
    current = None
    for line in options_file.read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            current = line
        elif current == section and line.startswith(f"{name}="):
            return line.split("=", 1)[1]
    raise AssertionError(f"{name} not in {options_file}")


def test_defaults_are_the_documented_constants() -> None:
    """A Store declared without sizes carries the module's default constants."""
    spec = Store("counts")
    assert spec.rocksdb_block_cache_mb == DEFAULT_ROCKSDB_BLOCK_CACHE_MB
    assert spec.rocksdb_write_buffer_mb == DEFAULT_ROCKSDB_WRITE_BUFFER_MB


@pytest.mark.parametrize("key", ["rocksdb_block_cache_mb", "rocksdb_write_buffer_mb"])
@pytest.mark.parametrize("value", [0, -1, MAX_ROCKSDB_MB + 1, 1.5, "16", True, None])
def test_invalid_size_is_config_error_naming_the_key(key: str, value: object) -> None:
    """A size that is not an int of MiB in range is a ConfigError naming the setting and value."""
    with pytest.raises(ConfigError, match=rf"invalid {key} {value!r} for store 'counts'") as info:
        Store("counts", **{key: value})  # type: ignore[arg-type]
    assert info.value.key == f"store.{key}"


def test_open_backend_hands_the_sizes_to_rocksdb(tmp_path: Path) -> None:
    """The Store's write budget sizes the memtable; index, filter (Bloom) blocks go to the cache."""
    spec = Store("counts", rocksdb_block_cache_mb=8, rocksdb_write_buffer_mb=3)
    path = tmp_path / "counts" / "0"
    backend = open_backend(spec, str(path), 0)
    try:
        assert isinstance(backend, RocksDBStore)
        assert _option(path, '[CFOptions "default"]', "write_buffer_size") == str(3 << 20)
        table = '[TableOptions/BlockBasedTable "default"]'
        assert _option(path, table, "cache_index_and_filter_blocks") == "true"
        assert _option(path, table, "filter_policy") == "bloomfilter"
    finally:
        backend.close()


def test_partitions_of_a_store_share_one_cache_until_the_last_closes(tmp_path: Path) -> None:
    """Partitions of one store share one cache and write budget; closing the last releases it."""
    spec = Store("counts")
    first = open_backend(spec, str(tmp_path / "counts" / "0"), 0)
    second = open_backend(spec, str(tmp_path / "counts" / "1"), 1)
    other = open_backend(Store("other"), str(tmp_path / "other" / "0"), 0)
    keys = [k for k in rocksdb._SHARED if k[0].startswith(str(tmp_path))]
    try:
        assert sorted(k[0] for k in keys) == [str(tmp_path / "counts"), str(tmp_path / "other")]
        first.close()
        assert all(k in rocksdb._SHARED for k in keys)
    finally:
        for store in (first, second, other):
            store.close()
    assert not any(k in rocksdb._SHARED for k in keys)


def test_write_budget_is_shared_across_partitions(tmp_path: Path) -> None:
    """Two partitions each under the budget but together over it make RocksDB flush one."""
    stores = [
        RocksDBStore(str(tmp_path / "counts" / str(p)), "counts", p, write_buffer_mb=1)
        for p in (0, 1)
    ]
    try:
        value = os.urandom(100)
        for p, store in enumerate(stores):  # ~0.6 MiB of memtable each
            store.write({b"%d-%06d" % (p, i): value for i in range(3000)}, 1)
        # RocksDB checks the budget when a write starts: the next one flushes.
        stores[1].write({b"next": value}, 2)
        deadline = time.monotonic() + 10
        while not list(tmp_path.glob("counts/*/*.sst")):
            assert time.monotonic() < deadline, "no flush within 10 s"
            time.sleep(0.05)
        assert stores[0].get(b"0-000000") == value
        assert stores[1].get(b"1-002999") == value
    finally:
        for store in stores:
            store.close()
