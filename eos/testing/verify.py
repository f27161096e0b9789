"""Check that an output topic holds each input exactly once, in per-key order."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from eos.testing.helpers import ReadRecord

__all__ = ["Verdict", "verify_exactly_once"]


@dataclass
class Verdict:
    """What the verifier found. ``ok`` is True when nothing was lost or duplicated
    and every key's outputs came in input order."""

    inputs: int
    outputs: int
    duplicates: int
    lost: int
    unexpected: int
    out_of_order_keys: int
    examples: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.duplicates or self.lost or self.unexpected or self.out_of_order_keys)

    def __str__(self) -> str:
        text = (
            f"inputs={self.inputs} outputs={self.outputs} duplicates={self.duplicates} "
            f"lost={self.lost} unexpected={self.unexpected} "
            f"out_of_order_keys={self.out_of_order_keys}"
        )
        return text + (f" e.g. {self.examples[:5]}" if self.examples else "")


def verify_exactly_once(
    inputs: Sequence[ReadRecord],
    outputs: Sequence[ReadRecord],
    transform: Callable[[bytes | None], bytes | None] = lambda v: v,
) -> Verdict:
    """Compare ``outputs`` with ``transform(value)`` of every input.

    Input values must be unique. Per-key order is checked by comparing, for
    each key, the order of outputs with the order of inputs (both read in
    partition-offset order).
    """
    expected = [transform(r.value) for r in inputs]
    counts = Counter(r.value for r in outputs)
    wanted = Counter(expected)
    duplicates = sum(c - 1 for v, c in counts.items() if c > 1 and v in wanted)
    lost = sum(1 for v in wanted if v not in counts)
    unexpected = sum(c for v, c in counts.items() if v not in wanted)
    examples = [f"dup {v!r}" for v, c in counts.items() if c > 1][:3]
    examples += [f"lost {v!r}" for v in wanted if v not in counts][:3]
    by_key_in: dict[bytes | None, list[bytes | None]] = defaultdict(list)
    for record, value in zip(inputs, expected, strict=True):
        by_key_in[record.key].append(value)
    by_key_out: dict[bytes | None, list[bytes | None]] = defaultdict(list)
    for record in outputs:
        by_key_out[record.key].append(record.value)
    out_of_order = 0
    for key, values in by_key_out.items():
        reference = [v for v in by_key_in.get(key, []) if v in set(values)]
        seen: list[bytes | None] = []
        for v in values:
            if v not in seen:
                seen.append(v)
        if seen != reference:
            out_of_order += 1
            if len(examples) < 8:
                examples.append(f"order of key {key!r}")
    return Verdict(len(inputs), len(outputs), duplicates, lost, unexpected, out_of_order, examples)
