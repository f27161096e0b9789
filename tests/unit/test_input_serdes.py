"""Per-topic input serdes: ``input_serdes`` (Application, Config, properties) and
``builder.stream()`` serdes, decoded alike by the engine and the TestDriver."""

from __future__ import annotations

import pickle
from typing import Any

import pytest

import eos
from eos.dsl import input_serdes_for
from eos.engine import Engine
from eos.processor import Context
from eos.serde import resolve_serde
from eos.testing import TestDriver

STRING = resolve_serde("string")
JSON = resolve_serde("json")


def _config(**kwargs: Any) -> eos.Config:
    settings: dict[str, Any] = {
        "application_id": "a",
        "bootstrap_servers": "127.0.0.1:1",
        "input_topics": ["orders", "refunds"],
        "key_serde": "string",
        "value_serde": "string",
    }
    settings.update(kwargs)
    return eos.Config(**settings)


class Seen(eos.Processor):
    def __init__(self) -> None:
        self.records: list[tuple[str, object, object]] = []

    def process(self, record: eos.Record, ctx: eos.Context) -> None:
        self.records.append((record.topic, record.key, record.value))


# ------------------------------------------------------------------ Config


def test_input_serdes_are_kept_read_only_and_survive_pickling() -> None:
    """The mapping is stored as given (specs, not resolved) and cannot be changed later."""
    config = _config(input_serdes={"refunds": (None, "json")})
    assert dict(config.input_serdes) == {"refunds": (None, "json")}
    with pytest.raises(TypeError):
        config.input_serdes["orders"] = ("json", "json")  # type: ignore[index]
    assert pickle.loads(pickle.dumps(config)).input_serdes == {"refunds": (None, "json")}
    assert "input_serdes={'refunds': (None, 'json')}" in repr(config)


def test_a_topic_in_input_serdes_that_is_not_an_input_topic_is_refused() -> None:
    """A misspelt topic would silently decode nothing: ConfigError naming it."""
    with pytest.raises(eos.ConfigError, match="'refund'; it is not one of input_topics") as e:
        _config(input_serdes={"refund": (None, "json")})
    assert e.value.key == "input_serdes"
    assert "did you mean 'refunds'" in str(e.value)


@pytest.mark.parametrize(
    ("serdes", "message"),
    [
        ({"refunds": "json"}, "must be a pair"),
        ({"refunds": ("json",)}, "must be a pair"),
        ({"refunds": (None, "yaml")}, "invalid input_serdes: 'yaml'"),
        (["refunds"], "must be a mapping"),
    ],
)
def test_malformed_input_serdes_are_refused(serdes: object, message: str) -> None:
    """Each value is a (key_serde, value_serde) pair of valid serdes."""
    with pytest.raises(eos.ConfigError, match=message):
        _config(input_serdes=serdes)


def test_input_serdes_from_properties() -> None:
    """input.serdes.<topic>.key/.value set one part each; a dotted topic needs no escape."""
    config = eos.Config.from_mapping(
        {
            "application.id": "a",
            "bootstrap.servers": "127.0.0.1:1",
            "input.topics": "orders,refunds.v2",
            "value.serde": "string",
            "input.serdes.refunds.v2.value": "json",
            "input.serdes.refunds.v2.key": "string",
        }
    )
    assert dict(config.input_serdes) == {"refunds.v2": ("string", "json")}


@pytest.mark.parametrize("key", ["input.serdes.orders", "input.serdes.orders.values"])
def test_a_malformed_input_serdes_property_is_refused(key: str) -> None:
    """A key that is not input.serdes.<topic>.key/.value says how to write it."""
    with pytest.raises(eos.ConfigError, match=r"input\.serdes\.<topic>\.key"):
        eos.Config.from_mapping(
            {
                "application.id": "a",
                "bootstrap.servers": "127.0.0.1:1",
                "input.topics": "orders",
                key: "json",
            }
        )


def test_with_properties_changes_one_part_of_a_topics_serdes() -> None:
    """An overlay (eos run --config) replaces the parts it names and keeps the others."""
    config = _config(input_serdes={"refunds": ("string", "json")})
    changed = config.with_properties({"input.serdes.refunds.key": "bytes"})
    assert dict(changed.input_serdes) == {"refunds": ("bytes", "json")}


# ------------------------------------------------------------------ Application


def test_the_application_takes_input_serdes() -> None:
    """The keyword reaches the config, checked against the input topics."""
    app = eos.Application(
        application_id="a",
        bootstrap_servers="127.0.0.1:1",
        input_topics=["orders", "refunds"],
        processor=Seen(),
        input_serdes={"refunds": (None, "json")},
    )
    assert dict(app.config.input_serdes) == {"refunds": (None, "json")}
    with pytest.raises(eos.ConfigError, match="not one of input_topics"):
        eos.Application(
            application_id="a",
            bootstrap_servers="127.0.0.1:1",
            input_topics=["orders"],
            processor=Seen(),
            input_serdes={"refunds": (None, "json")},
        )


def test_input_serdes_that_contradict_the_builder_are_refused() -> None:
    """builder.stream("t", value_serde="json") and input_serdes={"t": (None, "string")}."""
    builder = eos.StreamBuilder()
    builder.stream("t", value_serde="json").to("out")
    with pytest.raises(eos.ConfigError, match="one topic holds one format"):
        eos.Application(
            application_id="a",
            bootstrap_servers="127.0.0.1:1",
            processor=builder.build(),
            input_serdes={"t": (None, "string")},
        )
    config = _config(input_topics=["t"], input_serdes={"t": ("string", "string")})
    with pytest.raises(eos.ConfigError, match="one topic holds one format"):
        eos.Application.from_config(config, builder.build())


def test_the_builders_serdes_and_input_serdes_combine() -> None:
    """The DSL names the value serde, input_serdes the key serde: both apply."""
    builder = eos.StreamBuilder()
    builder.stream("t", value_serde="json").to("out")
    assert input_serdes_for(builder.build(), {"t": ("string", None)}) == {"t": (STRING, JSON)}
    assert input_serdes_for(Seen(), {}) == {}


# ------------------------------------------------------------------ the engine


class _Msg:
    def __init__(self, topic: str, offset: int, key: bytes | None, value: bytes | None) -> None:
        self._topic, self._offset, self._key, self._value = topic, offset, key, value

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def timestamp(self) -> tuple[int, int]:
        return (0, 1000)

    def headers(self) -> None:
        return None


def _engine(config: eos.Config, processor: eos.Processor) -> Engine:
    """An engine that processes polled batches without a broker (at_least_once: no
    transaction to begin; outputs go nowhere)."""
    engine = Engine(config, processor)
    engine.ctx = Context(
        application_id="a",
        produce=lambda *args, **kwargs: None,
        key_serde=STRING,
        value_serde=STRING,
    )
    engine.outputs.produce_for_batch = lambda: engine.ctx._produce  # type: ignore[method-assign,union-attr]
    engine.assignment.assigned.update({("orders", 0), ("refunds", 0)})
    return engine


def test_the_engine_decodes_each_topic_with_its_serdes() -> None:
    """In one polled batch, records of refunds are JSON and of orders strings, run by run."""
    processor = Seen()
    config = _config(processing_guarantee="at_least_once", input_serdes={"refunds": (None, "json")})
    _engine(config, processor)._process(
        [
            _Msg("orders", 0, b"k", b'{"n": 1}'),
            _Msg("refunds", 0, b"k", b'{"n": 1}'),
            _Msg("refunds", 1, None, b"[2]"),
            _Msg("orders", 1, b"k2", b"plain"),
        ]
    )
    assert processor.records == [
        ("orders", "k", '{"n": 1}'),
        ("refunds", "k", {"n": 1}),
        ("refunds", None, [2]),
        ("orders", "k2", "plain"),
    ]


def test_the_engine_decodes_a_dsl_topology_with_its_stream_serdes() -> None:
    """Application.from_config with a config that does not name them: the builder's
    serdes still apply (the engine asks the processor, as the Application does)."""
    seen: list[object] = []
    builder = eos.StreamBuilder()
    builder.stream("refunds", value_serde="json").peek(lambda k, v: seen.append(v))
    builder.stream("orders").peek(lambda k, v: seen.append(v))
    config = _config(processing_guarantee="at_least_once")
    _engine(config, builder.build())._process(
        [_Msg("refunds", 0, b"k", b"{}"), _Msg("orders", 0, b"k", b"{}")]
    )
    assert seen == [{}, "{}"]


def test_a_record_its_topics_serde_cannot_decode_meets_the_policy(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A bad JSON refund fails in the JSON serde and is skipped (policy skip);
    the string record after it is processed."""
    processor = Seen()
    config = _config(
        processing_guarantee="at_least_once",
        processing_error_policy="skip",
        input_serdes={"refunds": (None, "json")},
    )
    engine = _engine(config, processor)
    engine._process([_Msg("refunds", 0, b"k", b"not json"), _Msg("orders", 0, b"k", b"ok")])
    assert engine.stats.skipped == 1
    assert processor.records == [("orders", "k", "ok")]
    assert "skipped refunds[0]@0: SerializationError: JsonSerde got invalid JSON" in caplog.text


# ------------------------------------------------------------------ the TestDriver


def test_the_driver_encodes_and_decodes_each_topic_with_its_serdes() -> None:
    """send() serializes, and the processor sees, each topic in its own format."""
    processor = Seen()
    driver = TestDriver(
        processor,
        input_topics=["orders", "refunds"],
        key_serde="string",
        value_serde="string",
        input_serdes={"refunds": (None, "json")},
    )
    driver.send({"n": 1}, key="k", topic="refunds")
    driver.send("plain", key="k", topic="orders")
    driver.send_raw(b'{"n": 2}', key=b"k", topic="orders")
    assert processor.records == [
        ("refunds", "k", {"n": 1}),
        ("orders", "k", "plain"),
        ("orders", "k", '{"n": 2}'),
    ]


def test_the_driver_refuses_input_serdes_of_a_topic_it_does_not_read() -> None:
    """As the Application: unknown topics in input_serdes are a ConfigError."""
    with pytest.raises(eos.ConfigError, match="not one of input_topics"):
        TestDriver(Seen(), input_topics=["orders"], input_serdes={"refunds": (None, "json")})


def test_the_driver_applies_the_policy_to_a_record_its_topic_cannot_decode() -> None:
    """skip: the bad refund is counted and skipped, the next record processed."""
    processor = Seen()
    driver = TestDriver(
        processor,
        input_topics=["refunds"],
        input_serdes={"refunds": ("string", "json")},
        processing_error_policy="skip",
    )
    driver.send_raw(b"not json", key=b"k")
    driver.send_raw(b"[1]", key=b"k")
    assert driver.skipped == 1
    assert processor.records == [("refunds", "k", [1])]


def test_outputs_to_an_input_topic_decode_with_its_serdes() -> None:
    """A consumer of refunds (this application) reads it as JSON: so does Output.value."""

    class Forward(eos.Processor):
        def process(self, record: eos.Record, ctx: eos.Context) -> None:
            if record.topic == "orders":
                ctx.send("refunds", b'{"n": 1}', key=b"k")

    driver = TestDriver(
        Forward(), input_topics=["orders", "refunds"], input_serdes={"refunds": (None, "json")}
    )
    driver.send(b"x", key=b"k")
    assert driver.output_values("refunds") == [{"n": 1}]
