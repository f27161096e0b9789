"""Java ``.properties`` files: the syntax, and the values of eos's own keys.

:func:`parse_properties` turns ``.properties`` text into a ``dict`` of strings
the way ``java.util.Properties.load`` does; :func:`read_properties` does the
same for a UTF-8 file. :data:`PROPERTY_FIELDS` names the
:class:`~eos.config.Config` field behind each eos key and
:func:`parse_property_value` converts a value for it; routing the other keys
to the clients is :meth:`eos.config.Config.from_mapping`'s business.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable, Mapping
from typing import Final, Literal, TypeAlias

from eos.errors import ConfigError

__all__ = [
    "INPUT_SERDES_PREFIX",
    "PROPERTY_FIELDS",
    "PropertyValue",
    "client_value",
    "did_you_mean",
    "parse_input_serde_key",
    "parse_properties",
    "parse_property_value",
    "read_properties",
    "unknown_key_hint",
]

PropertyValue: TypeAlias = str | int | float | bool
"""A value in a properties mapping: a string from a file, or a Python value."""

PROPERTY_FIELDS: Final[Mapping[str, str]] = {
    "application.id": "application_id",
    "bootstrap.servers": "bootstrap_servers",
    "input.topics": "input_topics",
    "processing.guarantee": "processing_guarantee",
    "instance.id": "instance_id",
    "key.serde": "key_serde",
    "value.serde": "value_serde",
    "commit.interval.ms": "commit_interval_ms",
    "max.batch.records": "max_batch_records",
    "transaction.timeout.ms": "transaction_timeout_ms",
    "processing.error.policy": "processing_error_policy",
    "dead.letter.topic": "dead_letter_topic",
    "late.record.policy": "late_record_policy",
    "max.task.idle.ms": "max_task_idle_ms",
    "max.in.flight.records": "max_in_flight",
    "record.timeout.ms": "record_timeout_ms",
    "state.dir": "state_dir",
    "shutdown.timeout.ms": "shutdown_timeout_s",
    "bootstrap.timeout.ms": "bootstrap_timeout_ms",
    "max.aborts.without.progress": "max_aborts_without_progress",
    "metrics.port": "metrics_port",
    "metrics.bind.address": "metrics_bind_address",
    "lineage.headers": "lineage_headers",
}
"""The eos keys of a properties file and the Config field each one sets."""

INPUT_SERDES_PREFIX: Final = "input.serdes."
"""``input.serdes.<topic>.key`` and ``input.serdes.<topic>.value`` set
``Config.input_serdes`` for one input topic: its key or value serde by name."""

_INT_FIELDS: Final = frozenset(
    {
        "commit_interval_ms",
        "max_batch_records",
        "transaction_timeout_ms",
        "bootstrap_timeout_ms",
        "max_aborts_without_progress",
        "max_task_idle_ms",
        "max_in_flight",
        "record_timeout_ms",
    }
)
# Kafka Streams (Java) settings with no eos key of that name, and what to write.
_STREAMS_HINTS: Final[Mapping[str, str]] = {
    "num.stream.threads": "eos runs one processing thread per instance; "
    "run more instances with `eos run --workers N`",
    "default.key.serde": "write key.serde",
    "default.value.serde": "write value.serde",
    "max.poll.records": "write max.batch.records for the records per transaction",
}

_LINE_BREAK: Final = re.compile(r"\r\n|\r|\n")
_PROPERTY_WS: Final = " \t\f"
_ESCAPES: Final[Mapping[str, str]] = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}


def _continues(line: str) -> bool:
    # An odd number of trailing backslashes escapes the line break.
    return (len(line) - len(line.rstrip("\\"))) % 2 == 1


def _unescape(text: str, lineno: int, key: str | None) -> str:
    if "\\" not in text:
        return text
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        i += 1
        if c != "\\":
            out.append(c)
        elif i < n and text[i] == "u":
            digits = text[i + 1 : i + 5]
            if len(digits) != 4 or any(d not in "0123456789abcdefABCDEF" for d in digits):
                where = f"key {key!r}" if key is not None else "a key"
                raise ConfigError(f"line {lineno}: malformed \\uXXXX escape in {where}", key=key)
            out.append(chr(int(digits, 16)))
            i += 5
        elif i < n:
            out.append(_ESCAPES.get(text[i], text[i]))
            i += 1
    return "".join(out)


def parse_properties(text: str) -> dict[str, str]:
    """Parse Java ``.properties`` text.

    Supports ``#`` and ``!`` comment lines, blank lines, ``key=value``,
    ``key: value`` and ``key value``, a backslash at the end of a line to
    continue it on the next (whose leading whitespace is dropped), and the
    escapes ``\\t \\n \\r \\f \\uXXXX`` and ``\\<char>``. Keys and values are
    stripped of surrounding whitespace; a later duplicate key wins.

    Args:
        text: The file contents.

    Returns:
        The properties in file order.

    Raises:
        ConfigError: A ``\\u`` escape is malformed.
    """
    props: dict[str, str] = {}
    lines = _LINE_BREAK.split(text)
    i = 0
    while i < len(lines):
        lineno = i + 1
        line = lines[i].lstrip(_PROPERTY_WS)
        i += 1
        if not line or line[0] in "#!":
            continue
        while _continues(line):
            line = line[:-1]
            if i < len(lines):
                line += lines[i].lstrip(_PROPERTY_WS)
                i += 1
            else:
                break
        end = 0
        while end < len(line) and line[end] not in "=:" + _PROPERTY_WS:
            end += 2 if line[end] == "\\" else 1
        key = _unescape(line[:end], lineno, None).strip()
        rest = line[end:].lstrip(_PROPERTY_WS)
        if rest[:1] in ("=", ":") and rest:
            rest = rest[1:].lstrip(_PROPERTY_WS)
        props[key] = _unescape(rest, lineno, key).strip()
    return props


def read_properties(path: str | os.PathLike[str]) -> dict[str, str]:
    """Read a UTF-8 ``.properties`` file; see :func:`parse_properties`.

    Args:
        path: The file.

    Returns:
        The properties in file order.

    Raises:
        ConfigError: The file cannot be read or decoded, or a ``\\u`` escape
            is malformed.
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read properties file {os.fspath(path)!r}: {exc}") from exc
    return parse_properties(text)


def _parse_int(key: str, value: PropertyValue) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise ConfigError(f"invalid {key}: {value!r}; must be an integer", key=key)


def parse_property_value(key: str, name: str, value: PropertyValue) -> object:
    """Convert the value of eos key ``key`` for Config field ``name``.

    A string is parsed as a file would spell it (integers, milliseconds,
    comma-separated topics, empty for unset); a Python value whose type the
    field takes (``5`` for ``commit.interval.ms``) is used as it is. The
    Config validates the result.

    Raises:
        ConfigError: An integer setting is not an integer.
    """
    if name in _INT_FIELDS:
        return _parse_int(key, value)
    if name == "lineage_headers":
        return _parse_bool(key, value)
    if name == "shutdown_timeout_s":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value / 1000
        return _parse_int(key, value) / 1000
    if not isinstance(value, str):
        return value  # instance.id=0 and the like; the Config says what it takes
    value = value.strip()
    if name == "input_topics":
        return tuple(t for t in (part.strip() for part in value.split(",")) if t)
    if name == "metrics_port":
        return _parse_int(key, value) if value else None
    if name == "dead_letter_topic":
        return value or None
    return value


def parse_input_serde_key(key: str) -> tuple[str, Literal["key", "value"]]:
    """``(topic, part)`` of an ``input.serdes.<topic>.key``/``.value`` key.

    The topic is what lies between the prefix and the last dot, so a topic
    name with dots (``orders.v2``) needs no escaping.

    Raises:
        ConfigError: The key names no topic, or ends in neither ``.key`` nor ``.value``.
    """
    rest = key[len(INPUT_SERDES_PREFIX) :]
    topic, dot, part = rest.rpartition(".")
    if not dot or not topic or part not in ("key", "value"):
        raise ConfigError(
            f"unknown setting {key!r}: write {INPUT_SERDES_PREFIX}<topic>.key or "
            f"{INPUT_SERDES_PREFIX}<topic>.value (a serde name) for one input topic's serdes",
            key="input_serdes",
        )
    return topic, "key" if part == "key" else "value"


def client_value(key: str, value: object) -> PropertyValue:
    """A client setting's value as librdkafka takes it: strings are stripped.

    Raises:
        ConfigError: The value is not a str, int, float or bool (the message
            names the key and the type, never the value).
    """
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, (int, float, bool)):
        return value
    raise ConfigError(
        f"invalid value for {key!r}: a {type(value).__name__}; must be a str, int, float or bool",
        key=key,
    )


def unknown_key_hint(key: str, client_names: Iterable[str]) -> str:
    """What to write instead of the unknown key ``key``: a sentence, or "".

    Names the eos key of a Python field name (``commit_interval_ms``), the eos
    replacement of a Kafka Streams setting, or the closest eos and librdkafka
    names ("did you mean ...") from ``client_names`` and :data:`PROPERTY_FIELDS`.
    """
    if key in _STREAMS_HINTS:
        return f"; {_STREAMS_HINTS[key]}"
    fields = {f: p for p, f in PROPERTY_FIELDS.items()}
    if key in fields:
        return f"; in a properties file write {fields[key]}"
    return did_you_mean(key, {*PROPERTY_FIELDS, *client_names})


def did_you_mean(name: str, candidates: Iterable[str], prefix: str = "") -> str:
    """``"; did you mean 'x'?"`` for the ``candidates`` closest to ``name``, or "".

    ``prefix`` is put before each suggestion (``producer.``).
    """
    matches = difflib.get_close_matches(name, sorted(set(candidates)), n=3, cutoff=0.75)
    return f"; did you mean {' or '.join(repr(prefix + m) for m in matches)}?" if matches else ""


def _parse_bool(key: str, value: PropertyValue) -> bool:
    """``true``/``false`` in any case (as Java's ``Boolean.parseBoolean`` reads them,
    but strict: anything else is an error, not false), or a Python bool."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ConfigError(f"invalid {key}: {value!r}; must be true or false", key=key)
