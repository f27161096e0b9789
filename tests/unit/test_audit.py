"""Lineage headers (``lineage_headers``) and the auditor behind ``eos verify``, without a broker."""

from __future__ import annotations

from typing import Any

import pytest

import eos
from eos._async import RecordContext
from eos.audit import LINEAGE_HEADER, Audit, client_settings, parse_lineage, parse_timestamp
from eos.cli import main
from eos.processor import Context
from eos.record import Record
from eos.testing.driver import TestDriver

Headers = list[tuple[str, bytes | None]]


def _lineage(topic: str, partition: int, offset: int, n: int) -> Headers:
    return [(LINEAGE_HEADER, f"{topic}/{partition}/{offset}/{n}".encode())]


class _Produce:
    """A fake ``produce`` keeping each call's topic and headers."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Any]] = []

    def __call__(self, topic: str, value: object, key: object, **kwargs: object) -> None:
        self.sent.append((topic, kwargs.get("headers")))


def _context(produce: _Produce, **kwargs: Any) -> Context[Any, Any]:
    return Context(
        application_id="app",
        produce=produce,
        key_serde=eos.StringSerde(),
        value_serde=eos.StringSerde(),
        **kwargs,
    )


# -- the header ------------------------------------------------------------------


def test_without_lineage_a_context_is_a_plain_context_running_the_same_send() -> None:
    """Lineage off (the default) makes a plain ``Context``, whose ``send`` has no
    lineage instruction: the hot path is untouched."""
    produce = _Produce()
    ctx = _context(produce, lineage=False)
    assert type(ctx) is Context
    assert type(_context(produce)) is Context
    for send in (Context.send, Context.send_raw):
        names = send.__code__.co_names
        assert not [n for n in names if n.startswith(("_lineage", "_stamp"))], names
    ctx.record = Record("k", "v", "in", 0, 7, 0, None)
    ctx.send("out", "v", key="k")
    assert produce.sent == [("out", None)]


def test_each_output_of_an_input_names_it_and_counts_from_zero_across_topics() -> None:
    """``<topic>/<partition>/<offset>/<n>``, n counting one input's sends to any topic;
    the next input starts from 0 again."""
    produce = _Produce()
    ctx = _context(produce, lineage=True)
    ctx.record = Record("k", "v", "orders", 2, 41, 0, None)
    ctx.send("a", "x", key="k")
    ctx.send_raw("b", b"y")
    ctx.send("a", "z", headers={"trace": b"1"})
    ctx.record = Record("k", "v", "orders", 2, 42, 0, None)
    ctx.send("a", "x")
    assert produce.sent == [
        ("a", [(LINEAGE_HEADER, b"orders/2/41/0")]),
        ("b", [(LINEAGE_HEADER, b"orders/2/41/1")]),
        ("a", [("trace", b"1"), (LINEAGE_HEADER, b"orders/2/41/2")]),
        ("a", [(LINEAGE_HEADER, b"orders/2/42/0")]),
    ]


def test_a_forwarded_lineage_header_is_replaced_and_a_refused_send_takes_no_number() -> None:
    """An input's own lineage header sent on is replaced, never doubled; a send whose
    serializer fails leaves no gap in n."""
    produce = _Produce()
    ctx = _context(produce, lineage=True)
    ctx.record = Record("k", "v", "in", 0, 5, 0, _lineage("upstream", 1, 9, 3))
    with pytest.raises(eos.SerializationError):
        ctx.send("out", object())
    ctx.send("out", "v", headers=ctx.record.headers)
    assert produce.sent == [("out", [(LINEAGE_HEADER, b"in/0/5/0")])]


def test_no_header_without_a_current_record_or_on_a_repartition_topic() -> None:
    """Timers and punctuations (no current record) and the application's repartition
    topics get no header; neither takes a number."""
    produce = _Produce()
    ctx = _context(produce, lineage=True)
    ctx.send("out", "from a timer")
    ctx.record = Record("k", "v", "in", 0, 3, 0, None)
    ctx.send_raw("app-by-region-repartition", b"x")
    ctx.send("out", "v")
    assert produce.sent == [
        ("out", None),
        ("app-by-region-repartition", None),
        ("out", [(LINEAGE_HEADER, b"in/0/3/0")]),
    ]


def test_the_async_runners_per_record_contexts_stamp_when_the_engines_does() -> None:
    """A lineage context, and the async runner's per-record contexts (made with
    ``__new__`` alone, ``lineage=`` taken from the engine's context), stamp; without
    lineage they are the plain classes."""
    ctx = _context(_Produce(), lineage=True)
    per_record = RecordContext.__new__(RecordContext, lineage=True)
    assert isinstance(ctx, Context) and type(ctx) is not Context
    assert isinstance(per_record, RecordContext) and type(per_record) is not RecordContext
    assert getattr(type(per_record), "stamps_lineage", False)
    assert type(RecordContext.__new__(RecordContext)) is RecordContext


def test_a_dsl_topology_stamps_its_outputs_but_not_its_repartition_records() -> None:
    """Through the DSL: ``.to()`` outputs carry the input's lineage in send order; the
    repartition records carry none, and the aggregate after them names the
    repartition record as its source."""
    builder = eos.StreamBuilder()
    orders = builder.stream("orders", key_serde="string", value_serde="string")
    orders.map_values(str.upper).to("upper")
    orders.to("copy")
    orders.group_by(lambda _k, v: v[:1]).count(store="by-letter").to_stream().map_values(str).to(
        "counts"
    )
    driver = TestDriver(builder.build(), application_id="app", lineage_headers=True)
    driver.send("apple", key="k1")
    lineage = {
        topic: [dict(o.headers or []).get(LINEAGE_HEADER) for o in driver.outputs(topic)]
        for topic in driver.topics()
    }
    assert lineage["upper"] == [b"orders/0/0/0"]
    assert lineage["copy"] == [b"orders/0/0/1"]
    repartition = next(t for t in lineage if t.endswith("-repartition"))
    assert lineage[repartition] == [None]
    assert lineage["counts"] == [f"{repartition}/0/0/0".encode()]


# -- configuration ---------------------------------------------------------------


class _Forward(eos.Processor):
    def process(self, record: eos.Record, ctx: eos.Context) -> None:
        ctx.send("out", record.value, key=record.key)


def test_lineage_headers_is_a_setting_and_a_property() -> None:
    """``lineage_headers`` defaults to False; ``lineage.headers=true`` in a file turns it
    on; anything but true/false is a ConfigError naming the key."""
    base = {"application.id": "a", "bootstrap.servers": "k:9092", "input.topics": "in"}
    assert eos.Config.from_mapping(base).lineage_headers is False
    assert eos.Config.from_mapping({**base, "lineage.headers": "TRUE"}).lineage_headers is True
    with pytest.raises(eos.ConfigError, match=r"lineage\.headers") as bad:
        eos.Config.from_mapping({**base, "lineage.headers": "yes please"})
    assert bad.value.key == "lineage.headers"
    with pytest.raises(eos.ConfigError, match="lineage_headers"):
        eos.Config(
            application_id="a",
            bootstrap_servers="k:9092",
            input_topics="in",
            lineage_headers="true",
        )  # type: ignore[arg-type]
    app = eos.Application(
        application_id="a",
        bootstrap_servers="k:9092",
        input_topics="in",
        processor=_Forward(),
        lineage_headers=True,
    )
    assert app.config.lineage_headers is True


# -- the auditor -----------------------------------------------------------------


def _audit(
    outputs: list[tuple[str, int, int, bytes | None, Headers | None]],
    inputs: list[tuple[str, int, int]],
    *,
    topics: tuple[str, ...] = ("out",),
    filters: bool = False,
    windows: dict[tuple[str, int], tuple[int, int]] | None = None,
    committed: int | None = None,
) -> Any:
    audit = Audit(topics, filters=filters)
    for output in outputs:
        audit.output(*output)
    for topic, partition, offset in inputs:
        audit.input(topic, partition, offset, judged=committed is None or offset < committed)
    return audit.finish(windows if windows is not None else {("in", 0): (0, 100)})


def _one_each(n: int) -> list[tuple[str, int, int, bytes | None, Headers | None]]:
    return [("out", 0, i, b"k", _lineage("in", 0, i, 0)) for i in range(n)]


def test_a_clean_one_to_one_pipeline_passes() -> None:
    """Every input with exactly one output, in order: nothing found."""
    report = _audit(_one_each(5), [("in", 0, i) for i in range(5)])
    assert report.ok and report.judged == report.delivered == 5
    assert report.summary()[-1].startswith("OK: exactly-once held for 5 inputs")


def test_a_duplicate_and_a_loss_are_found_with_examples() -> None:
    """A repeated (source, n) in one topic is a duplicate, an input with no output a
    loss (runs of lost offsets reported as one range)."""
    outputs = _one_each(6)
    del outputs[2:4]
    outputs.append(("out", 0, 99, b"k", _lineage("in", 0, 5, 0)))
    report = _audit(outputs, [("in", 0, i) for i in range(6)])
    assert not report.ok
    assert (report.lost, report.duplicates) == (2, 1)
    assert report.examples["lost"] == ["in/0 offsets 2..3: 2 inputs with no output"]
    assert report.examples["duplicate"] == ["out/0/99 repeats output 0 of in/0/5"]
    assert report.summary()[-1] == "FAILED: 2 lost, 1 duplicate"


def test_one_to_many_outputs_across_topics_are_one_delivery_and_gaps_are_incomplete() -> None:
    """Outputs 0 and 1 in two topics deliver one input; the same n in two topics is not a
    duplicate; an input with outputs 0 and 2 but no 1 is incomplete."""
    outputs = [
        ("a", 0, 0, b"k", _lineage("in", 0, 0, 0)),
        ("b", 0, 0, b"k", _lineage("in", 0, 0, 1)),
        ("a", 0, 1, b"k", _lineage("in", 0, 1, 0)),
        ("b", 0, 1, b"k", _lineage("in", 0, 1, 2)),
        ("b", 0, 2, b"k", _lineage("in", 0, 2, 10**12)),
    ]
    inputs = [("in", 0, 0), ("in", 0, 1), ("in", 0, 2)]
    report = _audit(outputs, inputs, topics=("a", "b"))
    assert (report.delivered, report.duplicates, report.incomplete) == (3, 0, 2)
    assert report.examples["incomplete"] == [
        "in/0/1 has outputs [0, 2], not [1]",
        f"in/0/2 has outputs [{10**12}], not [0, 1, 2, 3, 4]",
    ]


def test_filtered_inputs_are_not_loss_when_the_pipeline_filters() -> None:
    """With ``filters=True`` an input with no output is counted as filtered, and passes."""
    report = _audit(_one_each(2), [("in", 0, i) for i in range(4)], filters=True)
    assert report.ok and (report.filtered, report.lost) == (2, 0)


def test_a_key_whose_sources_go_backwards_is_an_order_violation() -> None:
    """Per output partition and key, a source offset lower than the one before is an
    order violation; other keys and partitions are independent."""
    outputs = [
        ("out", 0, 0, b"a", _lineage("in", 0, 1, 0)),
        ("out", 0, 1, b"b", _lineage("in", 0, 0, 0)),
        ("out", 0, 2, b"a", _lineage("in", 0, 0, 0)),
        ("out", 1, 0, b"a", _lineage("in", 0, 2, 0)),
    ]
    report = _audit(outputs, [("in", 0, 0), ("in", 0, 1), ("in", 0, 2)])
    assert report.order_violations == 1 and report.duplicates == 1
    assert report.examples["order"][0].startswith("out/0/2 key b'a': from in/0/0")


def test_outputs_of_unread_inputs_are_unknown_unless_outside_the_window() -> None:
    """An output naming an offset inside the window read but no record there, or a topic
    not read, is of unknown source; one naming an offset before or after the window is
    only counted. An output with no lineage header is unattributed."""
    outputs = [
        ("out", 0, 0, b"a", _lineage("in", 0, 3, 0)),
        ("out", 0, 1, b"b", _lineage("other", 0, 0, 0)),
        ("out", 0, 2, b"c", _lineage("in", 0, 1, 0)),
        ("out", 0, 3, b"d", _lineage("in", 0, 50, 0)),
        ("out", 0, 4, b"e", [("x", b"y")]),
        ("out", 0, 5, b"f", [(LINEAGE_HEADER, b"garbage")]),
    ]
    report = _audit(outputs, [("in", 0, 3)], windows={("in", 0): (2, 10)})
    assert (report.unknown_source, report.outside_window, report.unattributed) == (1, 2, 2)
    assert report.findings() == {"unknown source": 1, "unattributed": 2}


def test_a_dead_letter_copy_delivers_its_input_and_pending_inputs_are_not_judged() -> None:
    """A record with the ``eos.source.*`` dead-letter headers delivers its input; inputs at
    or after the committed offset are pending, neither lost nor delivered."""
    dead = [
        ("eos.error.type", b"ValueError"),
        ("eos.source.topic", b"in"),
        ("eos.source.partition", b"0"),
        ("eos.source.offset", b"1"),
    ]
    outputs = [("out", 0, 0, b"k", _lineage("in", 0, 0, 0)), ("dlq", 0, 0, b"k", dead)]
    inputs = [("in", 0, i) for i in range(4)]
    report = _audit(outputs, inputs, topics=("out", "dlq"), committed=2)
    assert report.ok
    assert (report.judged, report.delivered, report.dead_lettered, report.pending) == (2, 1, 1, 2)


def test_no_lineage_at_all_says_to_turn_the_setting_on() -> None:
    """Outputs with no lineage header at all: the report says how to turn it on."""
    report = _audit([("out", 0, 0, b"k", None)], [("in", 0, 0)])
    assert any("lineage_headers=True" in line for line in report.summary())


# -- parsing and the command line ------------------------------------------------


def test_lineage_and_timestamp_parsing() -> None:
    """A malformed header is None; ``--from-timestamp`` takes ms or ISO 8601 (UTC without
    a zone) and refuses anything else with a ConfigError."""
    assert parse_lineage(b"a.b/0/1/2") == ("a.b", 0, 1, 2)
    assert parse_lineage(b"a/0/x/2") is None and parse_lineage(b"\xff") is None
    assert parse_lineage(b"a/0/1/-2") is None and parse_lineage(b"0/1/2") is None
    assert parse_timestamp("2023-11-14T22:13:20") == 1_700_000_000_000
    assert parse_timestamp("2023-11-14T23:13:20+01:00") == 1_700_000_000_000
    with pytest.raises(eos.ConfigError, match="from-timestamp"):
        parse_timestamp("yesterday")


def test_client_settings_take_connection_settings_only_consumer_ones_winning() -> None:
    """From an application's properties: security settings, ``consumer.`` ones winning;
    nothing else (eos keys, producer tuning)."""
    props = {
        "application.id": "a",
        "security.protocol": "SASL_SSL",
        "sasl.password": "one",
        "consumer.sasl.password": "two",
        "linger.ms": "5",
    }
    assert client_settings(props) == {"security.protocol": "SASL_SSL", "sasl.password": "two"}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--input", "t", "--output", "t"], "either an input or an output"),
        (["--input", "a", "--output", "b", "--from-timestamp", "soon"], "from-timestamp"),
    ],
)
def test_verify_usage_errors_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A topic given as input and output, or a bad timestamp, exits 2 before any
    connection; so does a missing --output (argparse's usage error)."""
    assert main(["verify", *argv]) == 2
    assert message in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        main(["verify", "--input", "a"])
    assert usage.value.code == 2


def test_nothing_judged_is_said_so() -> None:
    """No input read is no finding (nothing to deliver), but the verdict says nothing was
    judged; inputs all pending prove nothing: not ok, asking about the application id."""
    empty = _audit([], [])
    assert empty.ok and empty.summary()[-1].startswith("NOTHING JUDGED")
    pending = _audit([], [("in", 0, 0)], committed=0)
    assert not pending.ok and "application id" in pending.summary()[-1]
