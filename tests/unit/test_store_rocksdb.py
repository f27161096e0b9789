"""RocksDB-only behaviour: locking, crash atomicity, layout on disk."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from eos.errors import StateError
from eos.state.rocksdb import RocksDBStore


def test_second_open_in_same_process_is_state_error(tmp_path: Path) -> None:
    """Opening a store partition that is already open fails with a StateError naming the lock."""
    path = str(tmp_path / "db")
    first = RocksDBStore(path, "counts", 1)
    try:
        with pytest.raises(StateError, match=r"counts\[1\].*locked"):
            RocksDBStore(path, "counts", 1)
    finally:
        first.close()


def test_open_held_by_another_process_is_state_error(tmp_path: Path) -> None:
    """A store partition locked by another process fails with a StateError naming the lock."""
    path = str(tmp_path / "db")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys, time
                from eos.state.rocksdb import RocksDBStore
                store = RocksDBStore({path!r}, "counts", 0)
                print("ready", flush=True)
                sys.stdin.read()
                """
            ),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(StateError, match="another process"):
            RocksDBStore(path, "counts", 0)
    finally:
        holder.kill()
        holder.wait()
    # The lock dies with the process.
    RocksDBStore(path, "counts", 0).close()


def test_close_releases_lock_even_after_iteration(tmp_path: Path) -> None:
    """After close() the same path can be reopened, even if iterators were used before."""
    path = str(tmp_path / "db")
    store = RocksDBStore(path)
    store.write({b"a": b"1", b"b": b"2"}, 1)
    assert list(store.iterate(reverse=True)) == [(b"b", b"2"), (b"a", b"1")]
    assert list(store.iterate(b"a", b"b")) == [(b"a", b"1")]
    store.close()
    RocksDBStore(path).close()


def test_missing_parent_directories_are_created(tmp_path: Path) -> None:
    """The store creates its directory and any missing parents."""
    path = tmp_path / "state" / "app" / "counts" / "7"
    RocksDBStore(str(path)).close()
    assert path.is_dir()


def test_wipe_reopens_at_same_path(tmp_path: Path) -> None:
    """wipe() destroys the data on disk and keeps holding the lock on the same path."""
    path = str(tmp_path / "db")
    store = RocksDBStore(path)
    try:
        store.write({b"k": b"v"}, 1)
        store.wipe()
        assert store.path == path
        with pytest.raises(StateError, match="locked"):
            RocksDBStore(path)
    finally:
        store.close()


_WRITER = """
import sys
from eos.state.rocksdb import RocksDBStore
store = RocksDBStore(sys.argv[1])
keys = [i.to_bytes(4, "big") for i in range(20_000)]
generation = (store.changelog_offset() or 0) + 1
print("ready", flush=True)
while True:
    value = generation.to_bytes(8, "big")
    store.write(dict.fromkeys(keys, value), changelog_offset=generation)
    generation += 1
"""


def test_sigkill_never_splits_data_from_checkpoint(tmp_path: Path) -> None:
    """A writer killed mid-write leaves every key at exactly the generation its checkpoint names."""
    path = str(tmp_path / "db")
    for delay in (0.05, 0.2, 0.35):
        writer = subprocess.Popen(
            [sys.executable, "-c", _WRITER, path], stdout=subprocess.PIPE, text=True
        )
        assert writer.stdout is not None
        assert writer.stdout.readline().strip() == "ready"
        time.sleep(delay)
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
        store = RocksDBStore(path)
        try:
            offset = store.changelog_offset()
            assert offset is not None
            values = {value for _, value in store.iterate()}
            assert values == {offset.to_bytes(8, "big")}
            assert sum(1 for _ in store.iterate()) == 20_000
        finally:
            store.close()
