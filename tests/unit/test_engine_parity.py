"""The Application and the engine agree with the TestDriver on issue 12's rules:
input topics from the topology, and what ``on_assign`` may do."""

from __future__ import annotations

from typing import Any

import pytest

import eos
from eos._batch import Assignment, Batch, Poison
from eos._rebalance import RebalanceListener
from eos.stats import EngineStats


def _builder() -> eos.StreamBuilder:
    builder = eos.StreamBuilder()
    builder.stream("orders").to("out")
    return builder


def test_an_application_takes_its_input_topics_from_the_builder() -> None:
    """input_topics left out: the DSL processor's source topics are consumed."""
    app = eos.Application(
        application_id="a", bootstrap_servers="127.0.0.1:1", processor=_builder().build()
    )
    assert tuple(app.config.input_topics) == ("orders",)


def test_an_application_with_other_input_topics_than_the_builder_is_refused() -> None:
    """input_topics=["order"] for stream("orders") is a ConfigError, from Config too."""
    with pytest.raises(eos.ConfigError, match="do not match the DSL topology"):
        eos.Application(
            application_id="a",
            bootstrap_servers="127.0.0.1:1",
            input_topics=["order"],
            processor=_builder().build(),
        )
    config = eos.Config(application_id="a", bootstrap_servers="127.0.0.1:1", input_topics=["order"])
    with pytest.raises(eos.ConfigError, match="do not match the DSL topology"):
        eos.Application.from_config(config, _builder().build())


class _Consumer:
    def assign(self, partitions: Any) -> None:
        pass


def test_the_engine_refuses_ctx_send_in_on_assign_as_the_driver_does() -> None:
    """The rebalance listener runs on_assign through Context.call_on_assign: a send there
    raises StateError instead of producing outside any transaction."""
    produced: list[object] = []

    class SendsOnAssign(eos.Processor):
        def process(self, record: eos.Record, ctx: eos.Context) -> None:
            pass

        def on_assign(self, partitions: list[eos.TopicPartition], ctx: eos.Context) -> None:
            ctx.send("hello", b"assigned")

    listener = RebalanceListener(
        cooperative=False,
        assignment=Assignment(),
        batch=Batch(),
        poison=Poison(),
        outputs=None,  # type: ignore[arg-type]
        committer=None,  # type: ignore[arg-type]
        processor=SendsOnAssign(),
        stats=EngineStats("a"),
    )
    listener.ctx = eos.Context(
        application_id="a",
        produce=lambda *args, **kwargs: produced.append(args),
        key_serde=eos.BytesSerde(),
        value_serde=eos.BytesSerde(),
    )
    from confluent_kafka import TopicPartition

    with pytest.raises(eos.StateError, match="from on_assign"):
        listener.on_assign(_Consumer(), [TopicPartition("orders", 0)])  # type: ignore[arg-type]
    assert produced == []
