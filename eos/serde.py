"""Serdes: turning record keys and values into bytes and back.

A serde is any object with ``serialize`` and ``deserialize`` methods (the
:class:`Serde` protocol). ``None`` maps to ``None`` in both directions for
every serde, built-in or not: a Kafka null value is a tombstone and must
survive a round trip unchanged.

Serdes run once per record, so the built-ins are stateless, slotted and do
no work beyond the conversion itself. The engine calls them through
:func:`deserialize_or_raise` and :func:`serialize_or_raise`, which turn any
failure into a :class:`~eos.errors.SerializationError` that names the part of
the record (key or value) and the topic.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final, Protocol, runtime_checkable

from typing_extensions import TypeVar

from eos.errors import ConfigError, Operation, Part, SerializationError

__all__ = [
    "BytesSerde",
    "JsonSerde",
    "JsonValue",
    "Serde",
    "StringSerde",
    "deserialize_or_raise",
    "resolve_serde",
    "serialize_or_raise",
]

T = TypeVar("T", default=Any)
"""What a serde decodes to. An unparameterised ``Serde`` is ``Serde[Any]``:
any serde object, as before serdes were generic."""

JsonValue = Any
"""What :class:`JsonSerde` decodes to: whatever :func:`json.loads` returns."""


@runtime_checkable
class Serde(Protocol[T]):
    """Converts one part of a record (key or value) to and from bytes.

    ``Serde[T]`` decodes non-null bytes to a ``T``: :class:`StringSerde` is a
    ``Serde[str]``, :class:`BytesSerde` a ``Serde[bytes]``, :class:`JsonSerde`
    a ``Serde[JsonValue]``. ``builder.stream(topic, value_serde=serde)`` types
    its stream by it.

    Contract:
        * ``serialize(None)`` returns ``None`` and ``deserialize(None)``
          returns ``None`` (Kafka null, a tombstone).
        * Both are called on the processing thread, once per record, and must
          not block. They may raise any exception on bad input; the engine
          wraps it in :class:`~eos.errors.SerializationError` and applies
          ``processing_error_policy``.
        * An instance may be shared by keys and values and by all partitions,
          so it should keep no per-record state.
    """

    def serialize(self, value: T | None, /) -> bytes | None:
        """Convert a value to bytes.

        Args:
            value: The key or value to write; ``None`` for Kafka null.

        Returns:
            The bytes to produce, or ``None`` for Kafka null.
        """
        ...

    def deserialize(self, data: bytes | None, /) -> T | None:
        """Convert bytes read from Kafka to a value.

        Args:
            data: The raw key or value; ``None`` for Kafka null.

        Returns:
            The decoded value, or ``None`` for Kafka null.
        """
        ...


class BytesSerde:
    """Passes bytes through unchanged (the default serde).

    Serializes ``bytes`` as is and ``bytearray``/``memoryview`` as a ``bytes``
    copy; anything else is a :class:`~eos.errors.SerializationError`.
    """

    __slots__ = ()

    def serialize(self, value: object) -> bytes | None:
        """Return ``value`` as bytes, or ``None`` for ``None``."""
        if isinstance(value, bytes) or value is None:
            return value
        if isinstance(value, (bytearray, memoryview)):
            return bytes(value)
        raise SerializationError(
            f"BytesSerde expects bytes, bytearray or memoryview, got {type(value).__name__}",
            part=None,
            operation="serialize",
        )

    def deserialize(self, data: bytes | None) -> bytes | None:
        """Return ``data`` unchanged."""
        return data

    def __repr__(self) -> str:
        return "BytesSerde()"


class StringSerde:
    """Encodes ``str`` as UTF-8.

    Only ``str`` is accepted when serializing; call ``str()`` in the processor
    if you mean to write other types as text.
    """

    __slots__ = ()

    def serialize(self, value: object) -> bytes | None:
        """Return ``value`` encoded as UTF-8, or ``None`` for ``None``."""
        if isinstance(value, str):
            try:
                return value.encode()
            except UnicodeEncodeError as exc:  # lone surrogates
                raise SerializationError(
                    f"StringSerde cannot encode str as UTF-8: {exc}",
                    part=None,
                    operation="serialize",
                ) from exc
        if value is None:
            return None
        raise SerializationError(
            f"StringSerde expects str, got {type(value).__name__}",
            part=None,
            operation="serialize",
        )

    def deserialize(self, data: bytes | None) -> str | None:
        """Return ``data`` decoded from UTF-8, or ``None`` for ``None``."""
        if data is None:
            return None
        try:
            return data.decode()
        except UnicodeDecodeError as exc:
            raise SerializationError(
                f"StringSerde got invalid UTF-8: {exc}",
                part=None,
                operation="deserialize",
            ) from exc

    def __repr__(self) -> str:
        return "StringSerde()"


# json.dumps with non-default arguments builds a new JSONEncoder on every call;
# one shared encoder avoids that per-record allocation.
_JSON_ENCODE: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_JSON_LOADS: Final = json.loads


class JsonSerde:
    """Encodes values as compact UTF-8 JSON.

    Serializes with ``separators=(",", ":")`` and ``ensure_ascii=False`` and
    deserializes with :func:`json.loads`. Tuples come back as lists and
    non-string dict keys as strings, as with :mod:`json`. Invalid JSON or an
    unserializable value is a :class:`~eos.errors.SerializationError`.
    """

    __slots__ = ()

    def serialize(self, value: object) -> bytes | None:
        """Return ``value`` as JSON bytes, or ``None`` for ``None``."""
        if value is None:
            return None
        try:
            return _JSON_ENCODE(value).encode()
        except (TypeError, ValueError) as exc:
            raise SerializationError(
                f"JsonSerde cannot serialize {type(value).__name__}: {exc}",
                part=None,
                operation="serialize",
            ) from exc

    def deserialize(self, data: bytes | None) -> JsonValue:
        """Return the value decoded from JSON, or ``None`` for ``None``."""
        if data is None:
            return None
        try:
            return _JSON_LOADS(data)
        except (TypeError, ValueError) as exc:  # JSONDecodeError, UnicodeDecodeError
            raise SerializationError(
                f"JsonSerde got invalid JSON: {exc}",
                part=None,
                operation="deserialize",
            ) from exc

    def __repr__(self) -> str:
        return "JsonSerde()"


_BYTES: Final = BytesSerde()
_STRING: Final = StringSerde()
_JSON: Final = JsonSerde()

_BUILTIN_SERDES: Final[Mapping[str, Serde]] = {
    "bytes": _BYTES,
    "string": _STRING,
    "str": _STRING,
    "json": _JSON,
}


def resolve_serde(spec: str | Serde, *, what: str = "serde") -> Serde:
    """Turn a serde name or object into a serde.

    Args:
        spec: ``"bytes"``, ``"string"`` (alias ``"str"``) or ``"json"``, or an
            object with ``serialize`` and ``deserialize`` methods, which is
            returned as is.
        what: The name of the setting being resolved, used in the error
            message and as :attr:`~eos.errors.ConfigError.key`.

    Returns:
        The serde. Built-ins are shared, stateless instances.

    Raises:
        ConfigError: ``spec`` is an unknown name or not a serde.
    """
    if isinstance(spec, str):
        serde = _BUILTIN_SERDES.get(spec)
        if serde is None:
            raise ConfigError(
                f"invalid {what}: {spec!r}; allowed: 'bytes', 'string' (alias 'str'), "
                "'json', or an object with serialize() and deserialize() methods",
                key=what,
            )
        return serde
    if isinstance(spec, type):
        raise ConfigError(
            f"invalid {what}: {spec.__name__} is a class; pass an instance: {spec.__name__}()",
            key=what,
        )
    if callable(getattr(spec, "serialize", None)) and callable(getattr(spec, "deserialize", None)):
        return spec
    raise ConfigError(
        f"invalid {what}: {type(spec).__name__} object has no serialize() and deserialize() "
        "methods; allowed: 'bytes', 'string' (alias 'str'), 'json', or a serde object",
        key=what,
    )


def _wrap(
    exc: Exception, *, part: Part, operation: Operation, topic: str | None
) -> SerializationError:
    where = f" for topic {topic!r}" if topic is not None else ""
    detail = str(exc) if isinstance(exc, SerializationError) else f"{type(exc).__name__}: {exc}"
    return SerializationError(
        f"cannot {operation} {part}{where}: {detail}",
        part=part,
        operation=operation,
        topic=topic,
    )


def deserialize_or_raise(
    serde: Serde, data: bytes | None, *, part: Part, topic: str | None
) -> object:
    """Deserialize one key or value, wrapping any failure.

    Args:
        serde: The serde to call.
        data: The raw bytes read from Kafka, or ``None``.
        part: ``"key"`` or ``"value"``.
        topic: The topic the record was read from.

    Returns:
        What ``serde.deserialize(data)`` returned.

    Raises:
        SerializationError: The serde raised; the new error has ``part``,
            ``operation`` and ``topic`` set and is chained to the original.
    """
    try:
        return serde.deserialize(data)
    except Exception as exc:
        raise _wrap(exc, part=part, operation="deserialize", topic=topic) from exc


def serialize_or_raise(
    serde: Serde, value: object, *, part: Part, topic: str | None
) -> bytes | None:
    """Serialize one key or value, wrapping any failure.

    Args:
        serde: The serde to call.
        value: The key or value to write, or ``None``.
        part: ``"key"`` or ``"value"``.
        topic: The topic the record is going to.

    Returns:
        What ``serde.serialize(value)`` returned.

    Raises:
        SerializationError: The serde raised; the new error has ``part``,
            ``operation`` and ``topic`` set and is chained to the original.
    """
    try:
        return serde.serialize(value)
    except Exception as exc:
        raise _wrap(exc, part=part, operation="serialize", topic=topic) from exc
