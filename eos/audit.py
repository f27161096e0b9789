"""The exactly-once auditor behind ``eos verify``: proves or disproves it from outside.

An application run with ``lineage_headers=True`` stamps every output with the
input record it came from (:data:`LINEAGE_HEADER`,
``<topic>/<partition>/<offset>/<n>``). :func:`audit` reads the output topics,
then the input topics, with ``read_committed`` consumers up to the ends they
had when it started, and :class:`Audit` matches them:

- an input with no output is **lost** (or **filtered**, when the pipeline
  declares that it drops records: ``filters=True``);
- an output whose ``(source, n)`` appears more than once in one output topic is
  a **duplicate**;
- an input with outputs ``0`` and ``2`` but no ``1`` is **incomplete** (an
  output lost, or sent to a topic not audited);
- an output naming an input that was not read is of **unknown source**, one
  with no header **unattributed**;
- within one output partition, a key whose outputs' sources (of one input
  partition) go backwards is an **order violation**.

A record that carries the ``eos.source.*`` headers of a dead-letter copy and
no lineage header is that input's dead-letter delivery: give the dead-letter
topic as an output and dead-lettered inputs are not lost.

Given the application's id, only the inputs below its committed offsets are
judged (the rest are still **pending**), so a running pipeline can be
audited; outputs of inputs outside the window read (before
``from_timestamp``, after the end) are counted, never judged.

:class:`Audit` holds about 70 bytes per output record (measured), plus one entry
per key and output partition for the order check; nothing per input.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Final

from confluent_kafka import Consumer

from eos._audit_read import (
    Progress,
    client_settings,
    committed_offsets,
    partitions,
    read_window,
    windows,
)
from eos._lineage import LINEAGE_HEADER
from eos.config import ClientValue
from eos.errors import ConfigError

__all__ = [
    "LINEAGE_HEADER",
    "Audit",
    "Report",
    "audit",
    "client_settings",
    "parse_lineage",
    "parse_timestamp",
]

TP = tuple[str, int]
"""``(topic, partition)``."""

Window = tuple[int, int]
"""``(first offset read, end offset)`` of one partition."""

EXAMPLES: Final = 5
"""Examples kept per kind of finding."""

DEFAULT_TIMEOUT_S: Final = 120.0
"""How long a read may make no progress before it fails: ``read_committed``
readers wait behind an open transaction, which the broker aborts after the
writer's ``transaction.timeout.ms`` (eos's default: 60 s)."""

_DEAD_LETTER_N: Final = -1
_SOURCE_HEADERS: Final = ("eos.source.topic", "eos.source.partition", "eos.source.offset")


def parse_lineage(value: bytes | None) -> tuple[str, int, int, int] | None:
    """``(topic, partition, offset, n)`` of a lineage header's value; None if malformed.

    >>> parse_lineage(b"orders/3/1042/0")
    ('orders', 3, 1042, 0)
    """
    if value is None:
        return None
    try:
        topic, *numbers = value.decode("ascii").rsplit("/", 3)
    except UnicodeDecodeError:
        return None
    if not topic or len(numbers) != 3 or not all(part.isdigit() for part in numbers):
        return None
    partition, offset, n = map(int, numbers)
    return topic, partition, offset, n


def parse_timestamp(text: str) -> int:
    """Milliseconds since the epoch from ``text``: an integer, or ISO 8601 (UTC if no zone).

    >>> parse_timestamp("1700000000000"), parse_timestamp("2023-11-14T22:13:20Z")
    (1700000000000, 1700000000000)

    Raises:
        ConfigError: ``text`` is neither.
    """
    if text.strip().isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(
            f"invalid --from-timestamp {text!r}: give milliseconds since the epoch or an "
            "ISO 8601 time such as 2024-05-01T12:00:00Z",
            "from_timestamp",
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1000)


@dataclass
class Report:
    """What an audit found. ``ok``: no input lost, nothing duplicated, incomplete,
    unattributed or of unknown source, and per-key order kept.

    Counts are of input records (``judged``, ``pending``, ``delivered``,
    ``lost``, ``filtered``, ``dead_lettered``, ``incomplete``) or of output
    records (the rest). ``examples`` holds a few of each finding, by kind.
    """

    inputs: Sequence[str]
    outputs: Sequence[str]
    judged: int = 0
    pending: int = 0
    delivered: int = 0
    lost: int = 0
    filtered: int = 0
    dead_lettered: int = 0
    incomplete: int = 0
    output_records: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    unknown_source: int = 0
    unattributed: int = 0
    order_violations: int = 0
    outside_window: int = 0
    examples: dict[str, list[str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Nothing found, and something judged whenever there was input to judge.

        Inputs all pending (none below the application's committed offsets: a
        wrong application id, or nothing committed yet) prove nothing: not ok.
        """
        if not self.judged and self.pending:
            return False
        return not (
            self.lost
            or self.duplicates
            or self.incomplete
            or self.unknown_source
            or self.unattributed
            or self.order_violations
        )

    def findings(self) -> dict[str, int]:
        """The nonzero counts that make the audit fail, by kind."""
        counts = {
            "lost": self.lost,
            "duplicate": self.duplicates,
            "incomplete": self.incomplete,
            "unknown source": self.unknown_source,
            "unattributed": self.unattributed,
            "order": self.order_violations,
        }
        return {kind: n for kind, n in counts.items() if n}

    def summary(self) -> list[str]:
        """The report as ``eos verify`` prints it: counts, examples, a verdict line."""
        outputs = sum(self.output_records.values())
        per_topic = ", ".join(f"{t} {n:,}" for t, n in self.output_records.items())
        rows = [
            ("inputs judged", self.judged, "input records read (below the committed offsets)"),
            ("pending", self.pending, "at or after the application's committed offsets"),
            ("outputs read", outputs, per_topic),
            ("delivered", self.delivered, "inputs with their outputs"),
            ("lost", self.lost, "inputs with no output"),
            ("filtered", self.filtered, "inputs with no output, the pipeline filters (--filters)"),
            ("dead-lettered", self.dead_lettered, "inputs delivered to a dead-letter topic"),
            ("duplicates", self.duplicates, "outputs repeating a (source, n) in one topic"),
            ("incomplete", self.incomplete, "inputs missing an output n below their last"),
            ("unknown source", self.unknown_source, "outputs naming an input not in the topics"),
            ("unattributed", self.unattributed, f"outputs without a valid {LINEAGE_HEADER} header"),
            ("order", self.order_violations, "outputs of a key whose source went backwards"),
            ("outside window", self.outside_window, "outputs of inputs before/after the range"),
        ]
        lines = [f"  {name:<16}{count:>12,}  {note}" for name, count, note in rows]
        for kind, examples in self.examples.items():
            lines += [f"  e.g. {kind}: {example}" for example in examples]
        if self.unattributed and self.unattributed == outputs:
            lines.append(
                f"  no output has an {LINEAGE_HEADER} header: run the application with "
                "lineage_headers=True (lineage.headers=true)"
            )
        findings = self.findings()
        if findings:
            found = ", ".join(f"{n:,} {kind}" for kind, n in findings.items())
            lines.append(f"FAILED: {found}")
        elif not self.judged:
            lines.append(
                "NOTHING JUDGED: no input record was read below the end"
                + (
                    " and the committed offsets (is the application id right?)"
                    if self.pending
                    else ""
                )
            )
        else:
            lines.append(
                f"OK: exactly-once held for {self.judged:,} inputs: each delivered once "
                "(or filtered or dead-lettered), nothing duplicated, per-key order kept"
            )
        return lines


class Audit:
    """Matches outputs to inputs; pure (no Kafka), fed by :func:`audit` or a test.

    Feed every output record first (:meth:`output`, each partition in offset
    order), then every input record (:meth:`input`), then call
    :meth:`finish`. Outputs are indexed by source; each input takes its
    outputs out of the index, so what is left at the end named inputs that
    were not read.

    Args:
        outputs: The output topics, in the order the report lists them.
        filters: The pipeline drops records: an input with no output is
            "filtered", not lost.
    """

    def __init__(self, outputs: Sequence[str], *, filters: bool = False) -> None:
        self.filters = filters
        self._topics = {topic: i for i, topic in enumerate(outputs)}
        self._width = len(outputs)
        self.report = Report(inputs=(), outputs=tuple(outputs))
        self.report.output_records = dict.fromkeys(outputs, 0)
        # Per source partition, per source offset: the outputs' codes,
        # (n + 1) * width + topic index (n = -1 for a dead-letter copy).
        self._index: dict[TP, dict[int, int | list[int]]] = {}
        # Per output topic, partition, key and source partition: the last (offset, n).
        self._last: dict[tuple[int, int, bytes, str, int], tuple[int, int]] = {}
        # The run of lost inputs in progress, per input partition: [first, last, count].
        self._run: dict[TP, list[int]] = {}

    def _example(self, kind: str, text: str) -> None:
        examples = self.report.examples.setdefault(kind, [])
        if len(examples) < EXAMPLES:
            examples.append(text)

    def output(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        headers: Sequence[tuple[str, bytes | None]] | None,
    ) -> None:
        """One output record, as read (``headers`` as confluent-kafka gives them)."""
        report = self.report
        report.output_records[topic] += 1
        source = _source_of(headers)
        if source is None:
            report.unattributed += 1
            self._example("unattributed", f"{topic}/{partition}/{offset}")
            return
        src_topic, src_partition, src_offset, n = source
        index = self._topics[topic]
        code = (n + 1) * self._width + index
        offsets = self._index.setdefault((src_topic, src_partition), {})
        entry = offsets.get(src_offset)
        if entry is None:
            offsets[src_offset] = code
        elif entry == code or (isinstance(entry, list) and code in entry):
            report.duplicates += 1
            what = "its dead-letter copy" if n == _DEAD_LETTER_N else f"output {n}"
            self._example(
                "duplicate",
                f"{topic}/{partition}/{offset} repeats {what} of {src_topic}/{src_partition}/"
                f"{src_offset}",
            )
        elif isinstance(entry, list):
            entry.append(code)
        else:
            offsets[src_offset] = [entry, code]
        if key is None or n == _DEAD_LETTER_N:
            return
        slot = (index, partition, key, src_topic, src_partition)
        last = self._last.get(slot)
        now = (src_offset, n)
        if last is not None and now < last:
            report.order_violations += 1
            self._example(
                "order",
                f"{topic}/{partition}/{offset} key {key[:40]!r}: from {src_topic}/"
                f"{src_partition}/{src_offset} (output {n}) after offset {last[0]} (output "
                f"{last[1]})",
            )
        self._last[slot] = now

    def input(self, topic: str, partition: int, offset: int, *, judged: bool = True) -> None:
        """One input record, as read; ``judged=False`` for one the application has
        not committed yet (pending: neither lost nor delivered)."""
        report = self.report
        offsets = self._index.get((topic, partition))
        entry = offsets.pop(offset, None) if offsets else None
        if not judged:
            report.pending += 1
            return
        report.judged += 1
        tp = (topic, partition)
        if entry is None:
            run = self._run.get(tp)
            if run is None:
                self._run[tp] = [offset, offset, 1]
            else:
                run[1] = offset
                run[2] += 1
            return
        self._end_run(tp)
        codes = [entry] if isinstance(entry, int) else entry
        ns = {code // self._width - 1 for code in codes}
        ns.discard(_DEAD_LETTER_N)
        if not ns:
            report.dead_lettered += 1
            return
        report.delivered += 1
        last = max(ns)
        if len(ns) != last + 1:
            report.incomplete += 1
            # The first missing numbers lie below len(ns) + EXAMPLES (never range(last)).
            missing = [i for i in range(min(last, len(ns) + EXAMPLES)) if i not in ns]
            self._example(
                "incomplete",
                f"{topic}/{partition}/{offset} has outputs {sorted(ns)[:EXAMPLES]}, not "
                f"{missing[:EXAMPLES]}",
            )

    def _end_run(self, tp: TP) -> None:
        run = self._run.pop(tp, None)
        if run is None:
            return
        first, last, count = run
        if self.filters:
            self.report.filtered += count
            return
        self.report.lost += count
        span = f"offset {first}" if first == last else f"offsets {first}..{last}"
        inputs = "1 input" if count == 1 else f"{count:,} inputs"
        self._example("lost", f"{tp[0]}/{tp[1]} {span}: {inputs} with no output")

    def finish(self, windows: Mapping[TP, Window]) -> Report:
        """Close the audit: ``windows`` are the input partitions read, ``(first, end)``.

        Outputs left in the index name an input that was not read: outside a
        window (counted, not judged) or of unknown source.
        """
        for tp in list(self._run):
            self._end_run(tp)
        report = self.report
        for (topic, partition), offsets in self._index.items():
            window = windows.get((topic, partition))
            for offset, entry in offsets.items():
                count = 1 if isinstance(entry, int) else len(entry)
                if window is not None and not window[0] <= offset < window[1]:
                    report.outside_window += count
                    continue
                report.unknown_source += count
                self._example(
                    "unknown source",
                    f"{count} output(s) name {topic}/{partition}/{offset}, not an input read",
                )
        self._index.clear()
        return report


def _source_of(
    headers: Sequence[tuple[str, bytes | None]] | None,
) -> tuple[str, int, int, int] | None:
    """The lineage of an output from its headers; a dead-letter copy's source with n = -1."""
    if not headers:
        return None
    found: dict[str, bytes | None] = {}
    for name, value in headers:
        if name == LINEAGE_HEADER:
            return parse_lineage(value)
        if name in _SOURCE_HEADERS:
            found[name] = value
    if len(found) != len(_SOURCE_HEADERS):
        return None
    try:
        topic, partition, offset = (found[name] or b"" for name in _SOURCE_HEADERS)
        return topic.decode(), int(partition), int(offset), _DEAD_LETTER_N
    except (UnicodeDecodeError, ValueError):
        return None


# -- reading Kafka ----------------------------------------------------------------


def audit(
    *,
    bootstrap_servers: str,
    inputs: Sequence[str],
    outputs: Sequence[str],
    client_config: Mapping[str, ClientValue] | None = None,
    from_timestamp_ms: int | None = None,
    application_id: str | None = None,
    filters: bool = False,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    progress: Progress | None = None,
) -> Report:
    """Read ``outputs``, then ``inputs``, with ``read_committed`` and audit them.

    Each partition is read from its start (or the first offset at or after
    ``from_timestamp_ms``) to the end it had when the audit began; the ends
    of the inputs are taken first, and the committed offsets of
    ``application_id`` (when given) before them, so every output of an input
    judged is in the outputs read.

    Raises:
        ConfigError: Kafka cannot be reached, or a topic does not exist.
        TimeoutError: A read made no progress for ``timeout_s`` (an open transaction).
    """
    base: dict[str, Any] = {**(client_config or {}), "bootstrap.servers": bootstrap_servers}
    topics = [*inputs, *outputs]
    committed: dict[TP, int] | None = None
    with closing(Consumer({**base, "group.id": f"eos-verify-{uuid.uuid4().hex[:12]}"})) as meta:
        parts = partitions(meta, topics, bootstrap_servers)
        if application_id is not None:
            committed = committed_offsets(
                base, application_id, [tp for tp in parts if tp[0] in inputs]
            )
        spans = windows(meta, parts, from_timestamp_ms, timeout_s)
    in_windows = {tp: w for tp, w in spans.items() if tp[0] in inputs}
    out_windows = {tp: w for tp, w in spans.items() if tp[0] in outputs}
    result = Audit(outputs, filters=filters)
    result.report.inputs = tuple(inputs)
    add_output = result.output

    def on_output(msg: Any) -> None:
        add_output(msg.topic(), msg.partition(), msg.offset(), msg.key(), msg.headers())

    read_window(base, out_windows, on_output, "outputs", timeout_s, progress)
    add_input = result.input
    if committed is None:

        def on_input(msg: Any) -> None:
            add_input(msg.topic(), msg.partition(), msg.offset())

    else:
        cut = committed

        def on_input(msg: Any) -> None:
            topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
            add_input(topic, partition, offset, judged=offset < cut.get((topic, partition), 0))

    read_window(base, in_windows, on_input, "inputs", timeout_s, progress)
    return result.finish(in_windows)
