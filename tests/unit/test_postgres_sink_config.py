"""PostgresProcessor's settings, failure classification and metrics (no broker, no database)."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from prometheus_client import CollectorRegistry, generate_latest

import eos
from eos.errors import ConfigError
from eos.metrics import SINK_METRIC_NAMES, register_metrics
from eos.sinks.postgres import PostgresProcessor
from eos.sinks.postgres._database import Failure, classify, describe_error
from eos.stats import EngineStats, SinkStats


class Save(PostgresProcessor[str, str]):
    def process(self, record: eos.Record[str, str], cur: psycopg.Cursor[Any]) -> None:
        cur.execute("SELECT 1")


@pytest.mark.parametrize(
    ("error", "failure"),
    [
        (psycopg.OperationalError("server closed the connection unexpectedly"), Failure.OUTAGE),
        (psycopg.InterfaceError("the connection is closed"), Failure.OUTAGE),
        (psycopg.errors.AdminShutdown(), Failure.OUTAGE),
        (psycopg.errors.TooManyConnections(), Failure.OUTAGE),
        (psycopg.errors.SerializationFailure(), Failure.OUTAGE),
        (psycopg.errors.DeadlockDetected(), Failure.OUTAGE),
        (psycopg.errors.LockNotAvailable(), Failure.OUTAGE),
        (psycopg.errors.ReadOnlySqlTransaction(), Failure.OUTAGE),
        (psycopg.errors.IdleInTransactionSessionTimeout(), Failure.OUTAGE),
        (psycopg.errors.UndefinedTable(), Failure.CONFIG),
        (psycopg.errors.UndefinedColumn(), Failure.CONFIG),
        (psycopg.errors.InsufficientPrivilege(), Failure.CONFIG),
        (psycopg.errors.SyntaxError(), Failure.CONFIG),
        (psycopg.errors.UniqueViolation(), Failure.RECORD),
        (psycopg.errors.CheckViolation(), Failure.RECORD),
        (psycopg.errors.InvalidTextRepresentation(), Failure.RECORD),
        (psycopg.errors.NumericValueOutOfRange(), Failure.RECORD),
        (psycopg.errors.InFailedSqlTransaction(), Failure.RECORD),
        (KeyError("id"), Failure.RECORD),
    ],
)
def test_failures_are_classified_by_sqlstate(error: BaseException, failure: Failure) -> None:
    """Outages are retried, statements that can never work stop, the rest is the record's."""
    assert classify(error) is failure


def test_describe_error_names_the_sqlstate_and_the_message() -> None:
    """A database error is described by its SQLSTATE, class and message."""
    text = describe_error(psycopg.errors.UniqueViolation("duplicate key value"))
    assert text.startswith("23505 UniqueViolation: duplicate key value")
    assert describe_error(KeyError("id")) == "KeyError: 'id'"


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://app:s3cret@db.example:5433/orders",
        "host=db.example port=5433 dbname=orders user=app password=s3cret",
    ],
)
def test_the_password_never_shows(dsn: str) -> None:
    """repr and ``where`` show user, host, port and database, never the password."""
    processor = Save(dsn)
    assert "s3cret" not in repr(processor)
    assert processor.where == "app@db.example:5433/orders"
    assert "s3cret" not in processor.where


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"dsn": ""}, "dsn"),
        ({"dsn": "not a connection string"}, "dsn"),
        ({"offsets_table": "eos offsets"}, "offsets_table"),
        ({"offsets_table": "a.b.c"}, "offsets_table"),
        ({"isolation_level": "chaos"}, "isolation_level"),
        ({"outage_timeout_s": 0}, "outage_timeout_s"),
        ({"outage_timeout_s": float("inf")}, "outage_timeout_s"),
        ({"lock_timeout_ms": -1}, "lock_timeout_ms"),
    ],
)
def test_bad_settings_are_config_errors(kwargs: dict[str, Any], key: str | None) -> None:
    """Each bad setting is a ConfigError naming it, at construction."""
    arguments: dict[str, Any] = {"dsn": "postgresql://eos@localhost/eos", **kwargs}
    dsn = arguments.pop("dsn")
    with pytest.raises(ConfigError) as raised:
        Save(dsn, **arguments)
    if key is not None:
        assert raised.value.key == key


def test_the_application_checks_the_sink() -> None:
    """A sink needs input topics and process(), and takes no processing_guarantee but the
    default: each is a ConfigError when the Application is built."""
    common: dict[str, Any] = {"application_id": "a", "bootstrap_servers": "localhost:9092"}

    class NoProcess(PostgresProcessor[str, str]):
        pass

    with pytest.raises(ConfigError, match=r"does not implement process\(self, record, cur\)"):
        eos.Application(**common, input_topics=["t"], processor=NoProcess("host=x"))
    with pytest.raises(ConfigError, match="input_topics"):
        eos.Application(**common, processor=Save("host=x"))
    with pytest.raises(ConfigError, match="processing_guarantee"):
        eos.Application(
            **common,
            input_topics=["t"],
            processor=Save("host=x"),
            processing_guarantee="at_least_once",
        )
    app = eos.Application(**common, input_topics=["t"], processor=Save("host=x password=pw"))
    assert "pw" not in repr(app.processor)


def test_sink_metrics_are_exported_with_the_sink_label() -> None:
    """An application whose processor is a sink exports eos_sink_* with sink="postgres"."""
    stats = EngineStats("app")
    stats.sink = SinkStats("postgres")
    stats.sink.committed(rows=7, seconds=0.004)
    stats.sink.aborted("outage")
    registry = CollectorRegistry()
    handle = register_metrics(stats, registry=registry)
    try:
        text = generate_latest(registry).decode()
    finally:
        handle.close()
    for name in SINK_METRIC_NAMES:
        assert name in text
    assert 'eos_sink_rows_committed_total{application_id="app",sink="postgres"} 7.0' in text
    aborts = 'eos_sink_transaction_aborts_total{application_id="app",reason="outage",'
    assert aborts + 'sink="postgres"} 1.0' in text
    assert 'eos_sink_outage_seconds{application_id="app",sink="postgres"} 0.0' in text


def test_sink_metrics_are_absent_for_a_kafka_application() -> None:
    """Without a sink, no eos_sink_* series is exported."""
    registry = CollectorRegistry()
    handle = register_metrics(EngineStats("app"), registry=registry)
    try:
        text = generate_latest(registry).decode()
    finally:
        handle.close()
    assert "eos_sink_" not in text


SINK_FOR_RUNNER = Save("postgresql://app:pw@localhost/eos")


def test_eos_run_loads_a_sink_instance_with_a_properties_file(tmp_path: Any) -> None:
    """`eos run module:sink --config app.properties` builds an Application around the sink;
    the example's ``app`` loads as any Application."""
    from eos.runner import load_application

    props = tmp_path / "app.properties"
    props.write_text("application.id=pg\nbootstrap.servers=localhost:9092\ninput.topics=orders\n")
    app = load_application(f"{__name__}:SINK_FOR_RUNNER", config_path=str(props))
    assert app.processor is SINK_FOR_RUNNER
    assert app.config.input_topics == ("orders",)
    example = load_application("examples.orders_to_postgres:app", instance_id="w-1")
    assert isinstance(example.processor, PostgresProcessor)
    assert example.config.instance_id == "w-1"
