"""A wrong or unreachable bootstrap.servers fails fast with one ConfigError (issue 12, item 6)."""

from __future__ import annotations

import logging
import socket
import time

import pytest

from eos._admin import REPEAT_WINDOW_S, KafkaLog, check_topics
from eos._stop import StopSignal
from eos.config import DEFAULT_BOOTSTRAP_TIMEOUT_MS, Config
from eos.errors import ConfigError


def _config(servers: str, **changes: object) -> Config:
    return Config(
        application_id="app",
        bootstrap_servers=servers,
        input_topics=["in"],
        **changes,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("servers", "hint"),
    [
        ("localhost", "write localhost:9092"),
        ("kafka://b:9092", "write b:9092"),
        ("a::b", "[::1]:9092"),
        ("b:9092,c", "write c:9092"),
        ("b:70000", "1-65535"),
        ("b:", "1-65535"),
        ("bad host:9092", "host name"),
    ],
)
def test_malformed_bootstrap_servers_fail_when_the_config_is_built(servers: str, hint: str) -> None:
    """Each malformed form is a ConfigError at construction, with what to write, before any I/O."""
    started = time.monotonic()
    with pytest.raises(ConfigError) as info:
        _config(servers)
    assert time.monotonic() - started < 0.5
    assert info.value.key == "bootstrap_servers"
    assert hint in str(info.value)


@pytest.mark.parametrize(
    "servers", ["localhost:9092", "127.0.0.1:1, 10.0.0.2:9093", "[::1]:9092", "SASL_SSL://b:9093"]
)
def test_well_formed_bootstrap_servers_pass(servers: str) -> None:
    """host:port lists, bracketed IPv6 and librdkafka's listener prefixes are accepted."""
    assert _config(servers).bootstrap_servers == servers


def test_bootstrap_timeout_default_and_property() -> None:
    """bootstrap_timeout_ms defaults to 10 s and is read from bootstrap.timeout.ms."""
    assert _config("b:1").bootstrap_timeout_ms == DEFAULT_BOOTSTRAP_TIMEOUT_MS == 10_000
    config = Config.from_mapping(
        {
            "application.id": "a",
            "bootstrap.servers": "b:1",
            "input.topics": "in",
            "bootstrap.timeout.ms": "2500",
        }
    )
    assert config.bootstrap_timeout_ms == 2500
    with pytest.raises(ConfigError, match="bootstrap_timeout_ms"):
        _config("b:1", bootstrap_timeout_ms=0)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_closed_port_is_one_config_error_within_the_timeout(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    """Nothing listening: one ConfigError with a hint after bootstrap_timeout_ms, and
    librdkafka's repeated connect failures reach `logging` once instead of stderr."""
    config = _config(f"127.0.0.1:{_closed_port()}", bootstrap_timeout_ms=2000)
    caplog.set_level(logging.DEBUG, logger="eos.kafka")
    started = time.monotonic()
    with pytest.raises(ConfigError) as info:
        check_topics(config, StopSignal(config.shutdown_timeout_s))
    elapsed = time.monotonic() - started
    assert 1.5 <= elapsed < 10  # the 2 s bound, with room for a loaded machine
    message = str(info.value)
    assert "cannot reach Kafka at 127.0.0.1:" in message
    assert "eos dev-kafka up" in message
    assert "bootstrap.timeout.ms" in message
    assert "%3|" not in capfd.readouterr().err
    warnings = [r for r in caplog.records if r.name == "eos.kafka" and r.levelno >= logging.WARNING]
    assert len(warnings) <= 3, [r.getMessage() for r in warnings]


def test_kafka_log_deduplicates_and_caps_levels(caplog: pytest.LogCaptureFixture) -> None:
    """A repeated librdkafka line is logged once at its level (at most WARNING), then at DEBUG."""
    kafka_log = KafkaLog()
    caplog.set_level(logging.DEBUG, logger="eos.kafka")
    line = (
        "[thrd:b:1/bootstrap]: b:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: "
        "Connection refused (after {}ms in state CONNECT)"
    )
    for elapsed in (0, 1, 2):
        kafka_log.log(
            logging.ERROR, "%s [%s] %s", "FAIL", "rdkafka#producer-1", line.format(elapsed)
        )
    kafka_log.log(logging.INFO, "%s [%s] %s", "CONFWARN", "rdkafka#producer-1", "other")
    levels = [r.levelno for r in caplog.records if r.name == "eos.kafka"]
    assert levels == [logging.WARNING, logging.DEBUG, logging.DEBUG, logging.INFO]


def test_kafka_log_logs_a_repeat_again_after_the_window(caplog: pytest.LogCaptureFixture) -> None:
    """The same line a minute later (the next outage) is logged at its level again."""
    now = [0.0]
    kafka_log = KafkaLog(clock=lambda: now[0])
    caplog.set_level(logging.DEBUG, logger="eos.kafka")
    for at in (0.0, 30.0, REPEAT_WINDOW_S + 1.0):
        now[0] = at
        kafka_log.log(logging.ERROR, "%s [%s] %s", "FAIL", "rdkafka#consumer-2", "b:1: down")
    levels = [r.levelno for r in caplog.records if r.name == "eos.kafka"]
    assert levels == [logging.WARNING, logging.DEBUG, logging.WARNING]
