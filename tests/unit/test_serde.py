from __future__ import annotations

import pytest

from eos.errors import ConfigError, SerializationError
from eos.serde import (
    BytesSerde,
    JsonSerde,
    Serde,
    StringSerde,
    deserialize_or_raise,
    resolve_serde,
    serialize_or_raise,
)

BUILTINS = [BytesSerde(), StringSerde(), JsonSerde()]


@pytest.mark.parametrize("serde", BUILTINS, ids=repr)
def test_none_is_none_both_ways(serde: Serde) -> None:
    """Every built-in maps None (a tombstone) to None in both directions."""
    assert serde.serialize(None) is None
    assert serde.deserialize(None) is None


@pytest.mark.parametrize("serde", BUILTINS, ids=repr)
def test_builtins_satisfy_the_protocol(serde: Serde) -> None:
    """Built-in serdes are recognised as Serde at runtime."""
    assert isinstance(serde, Serde)


def test_bytes_round_trip_and_buffer_types() -> None:
    """BytesSerde passes bytes through and copies bytearray/memoryview to bytes."""
    serde = BytesSerde()
    data = b"\x00\xffabc"
    assert serde.serialize(data) is data
    assert serde.deserialize(data) is data
    assert serde.serialize(bytearray(b"ab")) == b"ab"
    assert serde.serialize(memoryview(b"cd")) == b"cd"


def test_bytes_rejects_other_types() -> None:
    """BytesSerde refuses a str with a SerializationError naming the type."""
    with pytest.raises(SerializationError, match="got str") as info:
        BytesSerde().serialize("text")
    assert info.value.operation == "serialize"


def test_string_round_trip() -> None:
    """StringSerde round-trips non-ASCII text through UTF-8."""
    serde = StringSerde()
    assert serde.serialize("größe ✓") == "größe ✓".encode()
    assert serde.deserialize(serde.serialize("größe ✓")) == "größe ✓"


def test_string_errors() -> None:
    """StringSerde rejects non-str values, lone surrogates and invalid UTF-8."""
    serde = StringSerde()
    with pytest.raises(SerializationError, match="got int"):
        serde.serialize(5)
    with pytest.raises(SerializationError):
        serde.serialize("\udcff")
    with pytest.raises(SerializationError) as info:
        serde.deserialize(b"\xff\xfe")
    assert info.value.operation == "deserialize"


def test_json_is_compact_utf8() -> None:
    """JsonSerde writes compact JSON with non-ASCII characters as UTF-8."""
    assert JsonSerde().serialize({"a": [1, 2], "n": "é"}) == '{"a":[1,2],"n":"é"}'.encode()


@pytest.mark.parametrize("value", [{"k": [1, 2.5, None, True]}, [1, "x"], "s", 3, 0, False, ""])
def test_json_round_trip(value: object) -> None:
    """JsonSerde round-trips JSON-compatible values, falsy ones included."""
    serde = JsonSerde()
    assert serde.deserialize(serde.serialize(value)) == value


def test_json_errors() -> None:
    """JsonSerde turns unserializable values and invalid JSON into SerializationError."""
    serde = JsonSerde()
    with pytest.raises(SerializationError, match="set"):
        serde.serialize({1, 2})
    with pytest.raises(SerializationError, match="invalid JSON"):
        serde.deserialize(b"{not json")
    with pytest.raises(SerializationError):
        serde.deserialize(b"\xff")


def test_bad_json_through_helper_sets_part_and_topic() -> None:
    """deserialize_or_raise re-raises a built-in's error with part, operation and topic set."""
    with pytest.raises(SerializationError) as info:
        deserialize_or_raise(JsonSerde(), b"{oops", part="value", topic="orders")
    err = info.value
    assert (err.part, err.operation, err.topic) == ("value", "deserialize", "orders")
    assert "value" in str(err) and "orders" in str(err)
    assert isinstance(err.__cause__, SerializationError)


def test_helpers_wrap_user_serde_exceptions() -> None:
    """The helpers wrap any exception from a user serde, chained with `from`."""

    class Broken:
        def serialize(self, value: object) -> bytes | None:
            raise RuntimeError("nope")

        def deserialize(self, data: bytes | None) -> object:
            raise KeyError("missing")

    with pytest.raises(SerializationError, match="RuntimeError: nope") as info:
        serialize_or_raise(Broken(), 1, part="key", topic="out")
    assert (info.value.part, info.value.operation, info.value.topic) == ("key", "serialize", "out")
    assert isinstance(info.value.__cause__, RuntimeError)
    with pytest.raises(SerializationError, match="KeyError") as info:
        deserialize_or_raise(Broken(), b"x", part="value", topic=None)
    assert info.value.part == "value"


def test_helpers_return_results_unchanged() -> None:
    """The helpers return exactly what the serde returned."""
    assert serialize_or_raise(StringSerde(), "a", part="key", topic="t") == b"a"
    assert deserialize_or_raise(StringSerde(), b"a", part="key", topic="t") == "a"


@pytest.mark.parametrize(
    ("spec", "cls"),
    [("bytes", BytesSerde), ("string", StringSerde), ("str", StringSerde), ("json", JsonSerde)],
)
def test_resolve_builtin_names(spec: str, cls: type) -> None:
    """resolve_serde maps each built-in name (and the str alias) to its serde."""
    assert isinstance(resolve_serde(spec), cls)


def test_resolve_passes_serde_objects_through() -> None:
    """resolve_serde returns any object with serialize/deserialize unchanged."""
    serde = JsonSerde()
    assert resolve_serde(serde) is serde


def test_resolve_unknown_name_names_what_and_allowed_values() -> None:
    """An unknown name is a ConfigError naming the setting and the allowed values."""
    with pytest.raises(ConfigError, match=r"key_serde.*'xml'.*'bytes'.*'string'.*'json'") as info:
        resolve_serde("xml", what="key_serde")
    assert info.value.key == "key_serde"


def test_resolve_rejects_non_serde_objects() -> None:
    """An object without serialize/deserialize is a ConfigError."""
    with pytest.raises(ConfigError, match="int"):
        resolve_serde(42, what="value_serde")  # type: ignore[arg-type]
