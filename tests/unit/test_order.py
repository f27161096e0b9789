"""TimestampOrder: the records of co-partitioned stream and table partitions in timestamp order.

Pure logic with small message fakes (no consumer): which records are released, in what
order, when a partition is waited for, and what a rewind or a revocation takes back.
The guarantee itself is tested against the broker (tests/integration/test_tables.py,
tests/chaos/test_join_chaos.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError

import eos
from eos._batch import Assignment
from eos._order import LAG_WAIT_S, TimestampOrder
from eos.config import Config

ORDERS, CUSTOMERS, OTHER = "orders", "customers", "repartition"


@dataclass
class Msg:
    topic_: str
    partition_: int
    offset_: int
    ts: int
    eof: bool = False

    def topic(self) -> str:
        return self.topic_

    def partition(self) -> int:
        return self.partition_

    def offset(self) -> int:
        return self.offset_

    def timestamp(self) -> tuple[int, int]:
        return (1, self.ts)

    def error(self) -> Any:
        return KafkaError(KafkaError._PARTITION_EOF) if self.eof else None


def _order(idle_ms: int = 0) -> TimestampOrder:
    assignment = Assignment()
    assignment.assigned.update({(ORDERS, 0), (CUSTOMERS, 0), (OTHER, 0)})
    return TimestampOrder([ORDERS, CUSTOMERS], [CUSTOMERS], idle_ms, assignment)


def _ids(messages: list[Any]) -> list[tuple[str, int]]:
    return [(m.topic(), m.offset()) for m in messages]


def test_records_of_both_partitions_go_in_timestamp_order_table_first_on_ties() -> None:
    order = _order()
    out = order.arrange(
        [
            Msg(ORDERS, 0, 0, 10),
            Msg(ORDERS, 0, 1, 30),
            Msg(CUSTOMERS, 0, 0, 20),
            Msg(CUSTOMERS, 0, 1, 30),
            Msg(CUSTOMERS, 0, 2, 40, eof=False),
        ]
    )
    # orders is empty after o1 (30) and not read to its end: c2 (40) waits for it.
    assert _ids(out) == [(ORDERS, 0), (CUSTOMERS, 0), (CUSTOMERS, 1), (ORDERS, 1)]
    assert order.buffered == 1


def test_a_partition_read_to_its_end_keeps_nothing_waiting() -> None:
    order = _order()
    out = order.arrange([Msg(CUSTOMERS, 0, 5, 40), Msg(ORDERS, 0, 3, 0, eof=True)])
    assert _ids(out) == [(CUSTOMERS, 5)]
    assert order.buffered == 0


def test_max_task_idle_ms_waits_for_a_partition_read_to_its_end() -> None:
    order = _order(idle_ms=60_000)
    out = order.arrange([Msg(ORDERS, 0, 3, 0, eof=True), Msg(CUSTOMERS, 0, 5, 40)])
    assert out == [] and order.buffered == 1
    # The other partition's record arrives later: both go, in order.
    out = order.arrange([Msg(ORDERS, 0, 3, 35)])
    assert _ids(out) == [(ORDERS, 3)]
    assert order.buffered == 1  # c5 (40) still waits: orders is empty again


def test_minus_one_never_waits() -> None:
    order = _order(idle_ms=-1)
    out = order.arrange([Msg(CUSTOMERS, 0, 5, 40)])
    assert _ids(out) == [(CUSTOMERS, 5)]


def test_a_partition_behind_is_waited_for_at_most_lag_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    order = _order()
    assert order.arrange([Msg(ORDERS, 0, 1, 10)]) == []
    later = time.monotonic() + LAG_WAIT_S + 1
    monkeypatch.setattr("eos._order.time.monotonic", lambda: later)
    assert _ids(order.arrange([])) == [(ORDERS, 1)]


def test_other_topics_and_errors_pass_straight_through() -> None:
    order = _order()
    error = Msg(OTHER, 0, 0, 0, eof=True)
    out = order.arrange([Msg(OTHER, 0, 7, 99), error, Msg(ORDERS, 0, 1, 10)])
    assert out[0].offset() == 7 and out[1] is error and len(out) == 2


def test_take_and_drop_return_and_forget_buffered_records() -> None:
    order = _order()
    order.arrange([Msg(ORDERS, 0, 1, 10), Msg(ORDERS, 0, 2, 11)])
    assert _ids(order.take()) == [(ORDERS, 1), (ORDERS, 2)]
    assert order.buffered == 0
    order.arrange([Msg(ORDERS, 0, 1, 10)])
    order.drop([(ORDERS, 0)])
    assert order.buffered == 0 and order.take() == []


def test_records_of_a_partition_not_ready_are_not_held() -> None:
    order = _order()
    order._assignment.restoring.add((ORDERS, 0))
    out = order.arrange([Msg(ORDERS, 0, 1, 10)])
    assert _ids(out) == [(ORDERS, 1)]  # the engine holds it back and seeks it later


def test_max_task_idle_ms_is_a_setting(tmp_path: Path) -> None:
    config = Config(
        application_id="a", bootstrap_servers="b:9092", input_topics=["t"], max_task_idle_ms=-1
    )
    assert config.max_task_idle_ms == -1
    assert (
        Config(application_id="a", bootstrap_servers="b:9092", input_topics=["t"]).max_task_idle_ms
        == 0
    )
    with pytest.raises(eos.ConfigError, match="max_task_idle_ms"):
        Config(
            application_id="a", bootstrap_servers="b:9092", input_topics=["t"], max_task_idle_ms=-2
        )
    path = tmp_path / "app.properties"
    path.write_text(
        "application.id=a\nbootstrap.servers=b:9092\ninput.topics=t\nmax.task.idle.ms=250\n"
    )
    assert Config.from_properties(path).max_task_idle_ms == 250


@pytest.mark.parametrize(
    ("settings", "refused"),
    [
        ({}, False),  # librdkafka's default: range first
        ({"partition.assignment.strategy": "cooperative-sticky"}, True),
        ({"group.protocol": "consumer"}, True),  # the broker's default assignor: uniform
        ({"group.protocol": "consumer", "group.remote.assignor": "range"}, False),
    ],
)
def test_co_partitioned_inputs_need_an_assignor_that_keeps_partition_p_together(
    settings: dict[str, str], refused: bool
) -> None:
    """Partition p of a stream and of its table must go to one instance: only the range
    assignors guarantee it, so anything else is refused at start-up, naming the fix."""
    from eos.state.manager import _check_assignor

    if refused:
        with pytest.raises(eos.ConfigError, match="range"):
            _check_assignor(["orders", "customers"], settings)
    else:
        _check_assignor(["orders", "customers"], settings)
    _check_assignor(["orders"], settings)  # one input topic: any assignor
