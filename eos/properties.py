"""Java ``.properties`` files: the syntax, not the meaning of the keys.

:func:`parse_properties` turns ``.properties`` text into a ``dict`` of strings
the way ``java.util.Properties.load`` does; :func:`read_properties` does the
same for a UTF-8 file. What the keys mean to eos is
:meth:`eos.config.Config.from_mapping`'s business.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Final

from eos.errors import ConfigError

__all__ = ["parse_properties", "read_properties"]

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
