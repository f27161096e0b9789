"""Context.send and send_raw hand the producer what it was given, and nothing more."""

from __future__ import annotations

import inspect

import pytest

import eos
from eos.errors import ProduceError


class Producer:
    """A fake ``produce`` that records its calls; ``full`` calls raise BufferError first."""

    def __init__(self, full: int = 0, refuse: Exception | None = None) -> None:
        self.calls: list[tuple[tuple[object, ...], dict[str, object]]] = []
        self.full = full
        self.refuse = refuse

    def __call__(self, *args: object, **kwargs: object) -> None:
        if self.full:
            self.full -= 1
            raise BufferError("queue full")
        if self.refuse is not None:
            raise self.refuse
        self.calls.append((args, kwargs))


def _ctx(produce: Producer, on_full: list[int] | None = None) -> eos.Context:
    return eos.Context(
        application_id="app",
        produce=produce,
        key_serde=eos.StringSerde(),
        value_serde=eos.StringSerde(),
        on_full=None if on_full is None else lambda: on_full.append(1),
    )


def test_timestamp_is_a_keyword_only_argument_of_send_and_send_raw() -> None:
    """ctx.send/send_raw(topic, value, *, key, headers, partition, timestamp): the new
    argument is keyword-only and defaults to None (the producer's current time)."""
    for method in (eos.Context.send, eos.Context.send_raw):
        params = inspect.signature(method).parameters
        assert list(params) == [
            "self",
            "topic",
            "value",
            "key",
            "headers",
            "partition",
            "timestamp",
        ]
        assert params["timestamp"].kind is inspect.Parameter.KEYWORD_ONLY
        assert params["timestamp"].default is None


def test_send_without_options_produces_topic_value_key_only() -> None:
    """The hot path: no timestamp, headers or partition means no keyword arguments at all,
    so librdkafka stamps the record with the current time."""
    produce = Producer()
    _ctx(produce).send("out", "v", key="k")
    assert produce.calls == [(("out", b"v", b"k"), {})]


def test_send_and_send_raw_pass_the_timestamp_and_headers_on() -> None:
    """A timestamp (ms since the epoch) and headers reach produce() as keywords."""
    produce = Producer()
    ctx = _ctx(produce)
    ctx.send("out", "v", key="k", timestamp=1_700_000_000_000)
    ctx.send_raw("raw", b"v", key=b"k", timestamp=5, headers=[("h", b"1")])
    assert produce.calls == [
        (("out", b"v", b"k"), {"timestamp": 1_700_000_000_000}),
        (("raw", b"v", b"k"), {"headers": [("h", b"1")], "timestamp": 5}),
    ]
    assert ctx.sends == 2


def test_a_full_queue_is_waited_out_and_the_timestamp_kept() -> None:
    """BufferError with a timestamp: on_full drains, then the same record is produced again."""
    produce = Producer(full=2)
    drained: list[int] = []
    ctx = _ctx(produce, drained)
    ctx.send_raw("out", b"v", key=b"k", timestamp=42, headers=[("h", b"1")])
    assert drained == [1, 1]
    assert produce.calls == [(("out", b"v", b"k"), {"headers": [("h", b"1")], "timestamp": 42})]
    assert ctx.sends == 1


def test_a_refused_timestamped_record_is_a_produce_error() -> None:
    """The producer's refusal (confluent-kafka's TypeError for a timestamp that is not an
    int) is a ProduceError naming the topic, as for any other send."""
    produce = Producer(refuse=TypeError("'float' object cannot be interpreted as an integer"))
    with pytest.raises(ProduceError) as info:
        _ctx(produce).send("out", "v", key="k", timestamp=1.5)  # type: ignore[arg-type]
    assert info.value.topic == "out"
    assert isinstance(info.value.__cause__, TypeError)
