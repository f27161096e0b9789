"""Store declarations and open_backend."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from eos.errors import ConfigError, StateError
from eos.serde import BytesSerde, JsonSerde, StringSerde
from eos.state import MemoryStore, StateStore, Store, open_backend
from eos.state.rocksdb import RocksDBStore


def test_defaults_are_rocksdb_and_json() -> None:
    """A store declared by name alone uses RocksDB and JSON keys and values."""
    spec = Store("order-counts")
    assert spec.backend == "rocksdb"
    assert [type(s) for s in spec.serdes()] == [JsonSerde, JsonSerde]


def test_a_table_takes_the_serdes_of_its_topic() -> None:
    """A table's serdes left as None are the ones its source topic is decoded with."""
    table = Store("customers", source_topic="customers", value_serde="json")
    topic_serdes = (StringSerde(), BytesSerde())
    assert [type(s) for s in table.serdes(topic_serdes)] == [StringSerde, JsonSerde]
    assert [type(s) for s in Store("plain").serdes(topic_serdes)] == [JsonSerde, JsonSerde]


def test_store_is_frozen() -> None:
    """A declaration cannot be changed after construction."""
    with pytest.raises(dataclasses.FrozenInstanceError):
        Store("x").name = "y"  # type: ignore[misc]


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "a b", "ünï", "x" * 201, "a\nb"])
def test_invalid_name_is_config_error(name: str) -> None:
    """Names that are unsafe as a directory or topic name part are a ConfigError on store.name."""
    with pytest.raises(ConfigError) as info:
        Store(name)
    assert info.value.key == "store.name"


@pytest.mark.parametrize("name", ["a", "order-counts", "v1.2_x", "A-Z.0_9"])
def test_valid_names_are_accepted(name: str) -> None:
    """Letters, digits, dot, underscore and dash are accepted."""
    assert Store(name).name == name


@pytest.mark.parametrize("backend", ["redis", "", 42])
def test_invalid_backend_is_config_error(backend: object) -> None:
    """An unknown backend name or a non-callable is a ConfigError on store.backend."""
    with pytest.raises(ConfigError) as info:
        Store("x", backend=backend)  # type: ignore[arg-type]
    assert info.value.key == "store.backend"


def test_unknown_serde_is_config_error() -> None:
    """An unknown serde name is rejected when the store is declared, not at assignment."""
    with pytest.raises(ConfigError) as info:
        Store("x", value_serde="yaml")
    assert info.value.key == "store.value_serde"


def test_open_backend_builtin_kinds(tmp_path: Path) -> None:
    """open_backend returns a MemoryStore or a RocksDBStore at the given path."""
    memory = open_backend(Store("m", backend="memory"), str(tmp_path / "m"), 0)
    rocks = open_backend(Store("r"), str(tmp_path / "r" / "0"), 0)
    try:
        assert isinstance(memory, MemoryStore)
        assert isinstance(rocks, RocksDBStore)
        assert (tmp_path / "r" / "0").is_dir()
    finally:
        memory.close()
        rocks.close()


def test_open_backend_calls_custom_factory(tmp_path: Path) -> None:
    """A factory backend is called with (path, store name, partition)."""
    calls: list[tuple[str, str, int]] = []

    def factory(path: str, name: str, partition: int) -> StateStore:
        calls.append((path, name, partition))
        return MemoryStore(name, partition)

    store = open_backend(Store("custom", backend=factory), str(tmp_path / "c"), 4)
    assert isinstance(store, MemoryStore)
    assert calls == [(str(tmp_path / "c"), "custom", 4)]


def test_factory_returning_non_store_is_state_error(tmp_path: Path) -> None:
    """A factory that returns something without the StateStore methods is a StateError."""
    spec = Store("bad", backend=lambda path, name, partition: object())  # type: ignore[arg-type,return-value]
    with pytest.raises(StateError, match="does not implement StateStore"):
        open_backend(spec, str(tmp_path), 0)
