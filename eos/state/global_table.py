"""Global tables, the local half: declaration, read-only view, checkpoints, start plan.

A :class:`GlobalStore` declares a table of a topic (a Kafka Streams
``GlobalKTable``): each instance keeps ALL partitions of the topic in one
local backend, so a processor can look up any key, whatever partition its own
record came from. The topic is the table's changelog; the application never
writes it (:class:`GlobalView` is read-only).

This module does no Kafka I/O and does not import ``confluent_kafka``:
:class:`eos.state.global_loader.GlobalTables` reads the topics (its module
docstring gives the lifecycle, consistency and failure behaviour) and keeps
each store's :class:`TableState` here, which decides where loading starts
(:func:`plan_start`) and writes the checkpoint file.

Checkpoints: the backend keeps one number, so the per-partition offsets live
in ``<path>.offsets.json``, replaced atomically AFTER the data it describes
was written (at most once a second while following, and at close). The
backend's own checkpoint is a write counter; the file records the counter its
offsets belong to. A file behind the data is harmless (replaying latest-value
records converges to the same table); a file AHEAD of the data (a machine crash
kept the file but lost the end of the database's log), a missing file next to
data, another topic, a recreated topic (new topic id), fewer partitions or an
offset beyond a partition's end wipe the store and reload it from the start,
with a warning. An offset below the start of the log (retention deleted records
not yet read) continues at the start, with a warning.

Threading: a :class:`GlobalView` and a :class:`TableState` belong to the
engine's processing thread; declarations are immutable.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import KW_ONLY, dataclass, field, replace
from typing import Any, Generic, TypeVar, overload

from eos.errors import ConfigError, StateError
from eos.record import K, V
from eos.serde import Serde
from eos.state.base import DEFAULT_BACKEND, StateStore, Store, StoreBackendFactory
from eos.state.restore import RestoreProgress
from eos.state.transaction import codec

__all__ = [
    "GLOBAL_PARTITION",
    "Checkpoint",
    "GlobalStore",
    "GlobalView",
    "StartPlan",
    "TableState",
    "plan_start",
    "read_checkpoint",
    "write_checkpoint",
]

log = logging.getLogger("eos.state")

GLOBAL_PARTITION = -1
"""The partition number a global store's backend is opened with: it holds them all."""
_RESERVED_PREFIX = "__eos"
_TOPIC_RE = re.compile(r"[A-Za-z0-9._-]{1,249}")
_READ_ONLY = (
    "global store {} is a table of topic {!r} and is read-only: it changes only by records "
    "of that topic (write to the topic instead)"
)
_D = TypeVar("_D")


# Not slotted, for the reason given at eos.Store.
@dataclass(frozen=True)
class GlobalStore(Generic[K, V]):
    """Declares a global table of ``topic`` (public as ``eos.GlobalStore``).

    Every instance holds every partition of the topic; ``ctx.store(name)``
    is a read-only :class:`GlobalView`. The topic needs no co-partitioning
    with the input topics and the application never writes it.

    Attributes:
        name: Store name, with the rules of :class:`eos.Store` (and not
            starting with ``__eos``). Names the local directory.
        topic: The topic the table follows; it must exist.
        backend: ``"rocksdb"`` (the default: persistent, so a restart reads
            only what is new), ``"memory"`` (reloaded in full on every start)
            or a :data:`~eos.state.base.StoreBackendFactory`.
        key_serde: Serde name or object; ``None`` is the application's
            ``key_serde``. Lookups serialize keys with it.
        value_serde: Likewise for values and ``value_serde``.

    Raises:
        ConfigError: If the name, topic, backend or a serde name is invalid.
    """

    name: str
    topic: str
    _: KW_ONLY
    backend: str | StoreBackendFactory = DEFAULT_BACKEND
    key_serde: str | Serde[K] | None = None
    value_serde: str | Serde[V] | None = None

    def __post_init__(self) -> None:
        self.as_store()  # the name, backend and serde rules of eos.Store
        if self.name.startswith(_RESERVED_PREFIX):
            raise ConfigError(
                f"invalid global store name {self.name!r}: names starting with "
                f"{_RESERVED_PREFIX!r} are reserved for eos",
                key="store.name",
            )
        topic = self.topic
        if not isinstance(topic, str) or _TOPIC_RE.fullmatch(topic) is None or topic in (".", ".."):
            raise ConfigError(
                f"invalid topic {topic!r} for global store {self.name!r}: use 1-249 characters "
                "from A-Z a-z 0-9 . _ -",
                key="store.topic",
            )

    def as_store(self) -> Store[K, V]:
        """The plain :class:`eos.Store` with this name, backend and serdes (to open a backend)."""
        return Store(
            self.name, backend=self.backend, key_serde=self.key_serde, value_serde=self.value_serde
        )

    def _as_table(self) -> Store[K, V]:
        # A table's None serdes are the ones its topic is read with: the application's.
        return replace(self.as_store(), source_topic=self.topic)

    def serdes(self, app_serdes: tuple[Serde, Serde] | None = None) -> tuple[Serde[K], Serde[V]]:
        """Return the resolved ``(key_serde, value_serde)``.

        Args:
            app_serdes: The application's ``(key_serde, value_serde)``: they
                fill the parts left as None (without them, None is JSON).
        """
        return self._as_table().serdes(app_serdes)

    def decode_entries(
        self, items: Iterable[tuple[bytes, bytes]], app_serdes: tuple[Serde, Serde] | None = None
    ) -> Iterator[tuple[object, object]]:
        """Deserialize stored ``(key_bytes, value_bytes)`` pairs (as ``Store.decode_entries``)."""
        return self._as_table().decode_entries(items, app_serdes)


class GlobalView(Generic[K, V]):
    """What ``ctx.store(name)`` gives for a global store: reads of the whole table.

    Keys and values go through the store's serdes. Iteration follows the order
    of the serialized keys (as :class:`eos.state.transaction.StoreTransaction`).
    A key that serializes to ``None`` is never present. Writes raise
    :class:`~eos.errors.StateError`: the table changes only by its topic.

    Threading: the engine's processing thread; do not keep an iterator across
    two ``process()`` calls (the table may be written in between).
    """

    __slots__ = ("_backend", "_key_in", "_key_out", "_name", "_topic", "_value_out")

    def __init__(
        self, name: str, topic: str, backend: StateStore, key_serde: Serde[K], value_serde: Serde[V]
    ) -> None:
        self._name = name
        self._topic = topic
        self._backend = backend
        self._key_in, self._key_out = codec(key_serde)
        self._value_out = codec(value_serde)[1]

    def __repr__(self) -> str:
        return f"GlobalView({self._name}, topic={self._topic!r})"

    def _lookup(self, key: object) -> bytes | None:
        key_bytes = self._key_in(key)
        return None if key_bytes is None else self._backend.get(key_bytes)

    @overload
    def get(self, key: K) -> V | None: ...
    @overload
    def get(self, key: K, default: _D) -> V | _D: ...
    def get(self, key: K, default: object = None) -> object:
        """Return the value for ``key``, or ``default`` when absent."""
        value = self._lookup(key)
        return default if value is None else self._value_out(value)

    def __getitem__(self, key: K) -> V:
        value = self._lookup(key)
        if value is None:
            raise KeyError(key)
        result: V = self._value_out(value)
        return result

    def __contains__(self, key: object) -> bool:
        return self._lookup(key) is not None

    def items(self) -> Iterator[tuple[K, V]]:
        """Every ``(key, value)`` in serialized-key order."""
        key_out, value_out = self._key_out, self._value_out
        return ((key_out(k), value_out(v)) for k, v in self._backend.iterate())

    def keys(self) -> Iterator[K]:
        """Every key in serialized-key order."""
        key_out = self._key_out
        return (key_out(k) for k, _v in self._backend.iterate())

    def values(self) -> Iterator[V]:
        """Every value in serialized-key order."""
        value_out = self._value_out
        return (value_out(v) for _k, v in self._backend.iterate())

    def __iter__(self) -> Iterator[K]:
        return self.keys()

    def __setitem__(self, key: K, value: V) -> None:
        raise StateError(_READ_ONLY.format(self._name, self._topic))

    def __delitem__(self, key: K) -> None:
        raise StateError(_READ_ONLY.format(self._name, self._topic))


# -- checkpoints -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The content of a global store's checkpoint file.

    Attributes:
        topic: The topic the data was loaded from.
        topic_id: Its topic id (a recreated topic has a new one), if known.
        write: The backend's write counter the offsets belong to.
        offsets: ``{partition: next offset to read}``.
    """

    topic: str
    topic_id: str | None
    write: int
    offsets: Mapping[int, int]

    def dumps(self) -> str:
        """The file's text."""
        offsets = {str(p): o for p, o in sorted(self.offsets.items())}
        doc = {"version": 1, "topic": self.topic, "topic_id": self.topic_id, "write": self.write}
        return json.dumps({**doc, "offsets": offsets})

    @classmethod
    def loads(cls, text: str) -> Checkpoint:
        """Parse the file's text; ValueError (or KeyError/TypeError) if it is not one."""
        doc = json.loads(text)
        if doc["version"] != 1:
            raise ValueError(f"unknown checkpoint version {doc['version']!r}")
        topic_id = doc["topic_id"]
        offsets = {int(p): int(o) for p, o in doc["offsets"].items()}
        if not isinstance(doc["topic"], str) or any(o < 0 for o in offsets.values()):
            raise ValueError("malformed checkpoint")
        return cls(
            doc["topic"], None if topic_id is None else str(topic_id), int(doc["write"]), offsets
        )


def read_checkpoint(path: str) -> Checkpoint | None:
    """The checkpoint at ``path``, or None when there is none or it cannot be read (logged)."""
    try:
        with open(path, encoding="utf-8") as f:
            return Checkpoint.loads(f.read())
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("ignoring unreadable global store checkpoint %s: %s", path, exc)
        return None


def write_checkpoint(path: str, checkpoint: Checkpoint) -> None:
    """Replace the file at ``path`` atomically (a crash leaves the old or the new one).

    Raises:
        StateError: The file cannot be written.
    """
    tmp = f"{path}.tmp"
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(checkpoint.dumps())
        os.replace(tmp, path)
    except OSError as exc:
        raise StateError(f"cannot write the global store checkpoint {path!r}: {exc}") from exc


@dataclass(frozen=True, slots=True)
class StartPlan:
    """Where to start reading each partition, from :func:`plan_start`.

    Attributes:
        starts: ``{partition: offset}`` to read from.
        wipe: Why the local data must be wiped first, or None to keep it.
        below_start: ``{partition: (checkpoint, low watermark)}`` where the
            records in between were deleted before they were read.
    """

    starts: dict[int, int]
    wipe: str | None = None
    below_start: dict[int, tuple[int, int]] = field(default_factory=dict)


def plan_start(
    checkpoint: Checkpoint | None,
    stored_write: int | None,
    *,
    topic: str,
    topic_id: str | None,
    lows: Mapping[int, int],
    highs: Mapping[int, int],
) -> StartPlan:
    """Decide from where to load each partition of a global store; see the module docstring.

    Args:
        checkpoint: The checkpoint file's content, if readable.
        stored_write: The backend's write counter (its checkpoint); None if it is empty.
        topic: The store's topic now.
        topic_id: Its topic id now, if known.
        lows: ``{partition: low watermark}`` for every partition of the topic now.
        highs: ``{partition: high watermark}`` likewise.
    """
    if stored_write is None:
        return StartPlan(dict(lows))
    reason: str | None = None
    if checkpoint is None:
        reason = "it holds data but no readable checkpoint file"
    elif checkpoint.topic != topic:
        reason = f"it was loaded from topic {checkpoint.topic!r}, not {topic!r}"
    elif topic_id and checkpoint.topic_id and checkpoint.topic_id != topic_id:
        reason = (
            f"topic {topic!r} was deleted and recreated (topic id {checkpoint.topic_id}, "
            f"now {topic_id})"
        )
    elif checkpoint.write > stored_write:
        reason = (
            f"its data (write {stored_write}) is older than its checkpoint (write "
            f"{checkpoint.write}): a crash lost the end of the local database"
        )
    else:
        gone = sorted(p for p in checkpoint.offsets if p not in lows)
        beyond = sorted(
            (p, o) for p, o in checkpoint.offsets.items() if p in highs and o > highs[p]
        )
        if gone:
            reason = f"topic {topic!r} has {len(lows)} partitions now, fewer than before"
        elif beyond:
            p, offset = beyond[0]
            reason = (
                f"its checkpoint offset {offset} of partition {p} is beyond that partition's "
                f"end {highs[p]} (was topic {topic!r} deleted and recreated?)"
            )
    if reason is not None or checkpoint is None:
        return StartPlan(dict(lows), reason)
    starts: dict[int, int] = {}
    below: dict[int, tuple[int, int]] = {}
    for p, low in lows.items():
        offset = checkpoint.offsets.get(p, low)
        if offset < low:
            below[p] = (offset, low)
            offset = low
        starts[p] = offset
    return StartPlan(starts, None, below)


# -- run-time state --------------------------------------------------------------


@dataclass(eq=False)
class TableState:
    """One global store at run time: its backend, read positions and checkpoint.

    The loader (:class:`~eos.state.global_loader.GlobalTables`) fills
    ``partitions`` and ``topic_id``, opens ``backend``, calls :meth:`prepare`
    with the topic's offsets, then feeds records through :meth:`apply` and
    :meth:`advance`. A position advances only after the backend write of the
    records below it, so :meth:`save_checkpoint` never runs ahead of the data.

    Attributes:
        spec: The declaration; ``serdes`` its resolved ``(key_serde, value_serde)``.
        path: The backend's directory; the checkpoint file is next to it.
        backend: The open backend, or None before start and after close.
        topic_id: The topic's id and ``partitions`` its partitions, once described.
        positions: ``{partition: next offset to apply}``; ``ends`` where the load stops.
        write: The backend's write counter; ``saved`` the positions the file holds.
        progress: Counts the records of the current load, for logging.
    """

    spec: GlobalStore[Any, Any]
    path: str
    serdes: tuple[Serde, Serde]
    backend: StateStore | None = None
    topic_id: str | None = None
    partitions: list[int] = field(default_factory=list)
    positions: dict[int, int] = field(default_factory=dict)
    ends: dict[int, int] = field(default_factory=dict)
    write: int = 0
    saved: dict[int, int] = field(default_factory=dict)
    progress: RestoreProgress | None = None

    @property
    def persistent(self) -> bool:
        """Whether the backend outlives the process (so a checkpoint file is kept)."""
        return self.spec.backend != "memory"

    @property
    def checkpoint_path(self) -> str:
        """``<path>.offsets.json``."""
        return f"{self.path}.offsets.json"

    def open_backend(self) -> StateStore:
        """The backend; StateError if it is not open."""
        backend = self.backend
        if backend is None:
            raise StateError(f"global store {self.spec.name!r} is not open")
        return backend

    def behind(self) -> bool:
        """Whether some partition has not reached its end yet."""
        return any(self.positions[p] < end for p, end in self.ends.items())

    def prepare(
        self,
        lows: Mapping[tuple[str, int], int],
        highs: Mapping[tuple[str, int], int],
        ends: Mapping[tuple[str, int], int],
    ) -> None:
        """Apply :func:`plan_start` (wiping the backend if it says so) and set the positions.

        Args:
            lows: ``{(topic, partition): low watermark}``, covering this table's partitions.
            highs: ``{(topic, partition): high watermark}`` likewise.
            ends: ``{(topic, partition): offset}`` to load up to (the last stable offset).

        Raises:
            StateError: The backend is not open, or cannot be read or wiped.
        """
        backend, topic = self.open_backend(), self.spec.topic
        stored = backend.changelog_offset()
        plan = plan_start(
            read_checkpoint(self.checkpoint_path) if self.persistent else None,
            stored,
            topic=topic,
            topic_id=self.topic_id,
            lows={p: lows[(topic, p)] for p in self.partitions},
            highs={p: highs[(topic, p)] for p in self.partitions},
        )
        if plan.wipe is not None:
            log.warning(
                "global store %s: %s; wiping it and reloading topic %s from the start",
                self.spec.name,
                plan.wipe,
                topic,
            )
            backend.wipe()
            stored = None
        if stored is None:  # empty: any checkpoint file is stale (wiped before the crash)
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.checkpoint_path)
        for p, (offset, low) in plan.below_start.items():
            log.warning(
                "global store %s: records %d..%d of %s[%d] were deleted (retention) before "
                "they were loaded; continuing at %d",
                self.spec.name,
                offset,
                low - 1,
                topic,
                p,
                low,
            )
        self.write = stored or 0
        self.positions = dict(plan.starts)
        self.saved = dict(plan.starts) if stored is not None else {}
        self.ends = {p: ends[(topic, p)] for p in self.partitions}
        target = sum(max(0, e - self.positions[p]) for p, e in self.ends.items())
        self.progress = RestoreProgress(self.spec.name, GLOBAL_PARTITION, target)
        log.info(
            "loading global store %s from topic %s (%d partitions), %s records behind",
            self.spec.name,
            topic,
            len(self.partitions),
            f"{target:,}",
        )

    def apply(self, changes: dict[bytes, bytes | None], records: int) -> None:
        """Write ``changes`` (None deletes) in one backend write; ``records`` is for progress."""
        self.write += 1
        self.open_backend().write(changes, self.write)
        if self.progress is not None:
            self.progress.add(records)

    def advance(self, partition: int, offset: int) -> bool:
        """Move ``partition``'s position up to ``offset`` (after :meth:`apply`); True if moved."""
        if offset > self.positions.get(partition, 0):
            self.positions[partition] = offset
            return True
        return False

    def save_checkpoint(self) -> None:
        """Write the positions to the checkpoint file, if persistent and changed.

        Raises:
            StateError: The file cannot be written (the previous one stays).
        """
        if not self.persistent or self.positions == self.saved or self.topic_id is None:
            return
        offsets = dict(self.positions)
        write_checkpoint(
            self.checkpoint_path, Checkpoint(self.spec.topic, self.topic_id, self.write, offsets)
        )
        self.saved = offsets
