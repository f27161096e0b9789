"""Mistakes in settings are ConfigErrors that say what to write (issue 12, items 3-5)."""

from __future__ import annotations

import contextlib
import pathlib
import re
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

import eos
from eos.config import Config
from eos.errors import ConfigError
from eos.runner import load_application

REQUIRED = {"application.id": "app", "bootstrap.servers": "b:9092", "input.topics": "in"}
BASE: dict[str, Any] = {
    "application_id": "app",
    "bootstrap_servers": "localhost:9092",
    "input_topics": ["in"],
}


class _Echo(eos.Processor):
    def process(self, ctx: eos.Context, record: eos.Record) -> None:
        pass


# -- item 3: misspelt keys ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "suggestion"),
    [
        ("comit.interval.ms", "'commit.interval.ms'"),
        ("processing.error.polcy", "'processing.error.policy'"),
        ("dead.leter.topic", "'dead.letter.topic'"),
        ("producer.lingr.ms", "'producer.linger.ms'"),
        ("consumer.sesion.timeout.ms", "'consumer.session.timeout.ms'"),
        ("enable.auto.comit", "'enable.auto.commit'"),
    ],
)
def test_misspelt_key_is_a_config_error_with_a_suggestion(key: str, suggestion: str) -> None:
    """A misspelt eos or librdkafka key fails at parse time and names the likely intended key."""
    with pytest.raises(ConfigError, match="did you mean") as info:
        Config.from_mapping({**REQUIRED, key: "5"})
    assert suggestion in str(info.value)


def test_misspelt_key_in_a_file_fails_when_the_file_is_read(tmp_path: Path) -> None:
    """Config.from_properties rejects an unknown key of the file before anything connects."""
    path = tmp_path / "app.properties"
    path.write_text(
        "application.id=a\nbootstrap.servers=b:1\ninput.topics=in\ncomit.interval.ms=5\n"
    )
    with pytest.raises(ConfigError, match=re.escape("did you mean 'commit.interval.ms'")) as info:
        Config.from_properties(path)
    assert info.value.key == "comit.interval.ms"


def test_kafka_streams_only_setting_says_what_to_do_instead() -> None:
    """num.stream.threads (Kafka Streams) is rejected with the eos way to get more threads."""
    with pytest.raises(ConfigError, match="--workers"):
        Config.from_mapping({**REQUIRED, "num.stream.threads": "4"})


def test_python_field_name_in_a_file_names_the_property() -> None:
    """A Python field name used as a properties key is answered with the property spelling."""
    with pytest.raises(ConfigError, match=re.escape("write commit.interval.ms")):
        Config.from_mapping({**REQUIRED, "commit_interval_ms": "5"})


def test_known_client_settings_pass_dotted_or_not() -> None:
    """Real librdkafka settings, with or without a dot or prefix, are accepted."""
    config = Config.from_mapping(
        {**REQUIRED, "acks": "all", "debug": "broker", "consumer.session.timeout.ms": "9000"}
    )
    assert config.producer_config == {"acks": "all", "debug": "broker"}
    assert config.consumer_config["session.timeout.ms"] == "9000"


@pytest.mark.parametrize("field", ["producer_config", "consumer_config"])
def test_unknown_key_in_python_client_config_is_rejected(field: str) -> None:
    """Python-given client mappings are checked too: an unknown name is a ConfigError."""
    with pytest.raises(ConfigError, match=re.escape("did you mean 'linger.ms'")) as info:
        Config(**BASE, **{field: {"lingr.ms": 5}})
    assert info.value.key == "lingr.ms"


def test_value_librdkafka_rejects_is_a_config_error() -> None:
    """A value librdkafka refuses is reported at parse time, naming the key."""
    with pytest.raises(ConfigError, match=re.escape("producer.acks")) as info:
        Config.from_mapping({**REQUIRED, "producer.acks": "banana"})
    assert info.value.key == "acks"


def test_secret_values_never_appear_in_errors() -> None:
    """A rejected value of a secret setting is not echoed, even when librdkafka quotes it."""
    with pytest.raises(ConfigError) as info:
        Config(**BASE, producer_config={"ssl.key.password": ["hunter2"]})  # type: ignore[dict-item]
    assert "hunter2" not in str(info.value)
    with pytest.raises(ConfigError) as info:
        Config.from_mapping({**REQUIRED, "sasl.jaas.config": "x password=hunter2"})
    assert "hunter2" not in str(info.value)


# -- item 4: values of the wrong spelling or type ----------------------------------------------


def test_dead_letter_topic_needs_the_dead_letter_policy() -> None:
    """dead_letter_topic with another policy is a ConfigError naming the policy to set."""
    with pytest.raises(ConfigError, match=re.escape("processing.error.policy=dead_letter")) as info:
        Config(**BASE, dead_letter_topic="in.dlq", processing_error_policy="skip")
    assert info.value.key == "dead_letter_topic"


def test_unknown_application_keyword_suggests_the_setting() -> None:
    """A misspelt Application keyword is a ConfigError with "did you mean", not a TypeError."""
    with pytest.raises(ConfigError, match="did you mean 'commit_interval_ms'") as info:
        eos.Application(**BASE, processor=_Echo(), comit_interval_ms=5)  # type: ignore[call-arg]
    assert info.value.key == "comit_interval_ms"


def test_missing_or_positional_application_arguments_are_config_errors() -> None:
    """A missing required setting or a positional argument is a ConfigError too."""
    with pytest.raises(ConfigError, match="needs processor"):
        eos.Application(**BASE)  # type: ignore[call-arg]
    with pytest.raises(ConfigError, match="keyword arguments only"):
        eos.Application("app")  # type: ignore[call-arg]


def test_int_instance_id_path_state_dir_and_hyphenated_guarantee_work() -> None:
    """instance_id=0, a pathlib state_dir and "exactly-once-v2" are taken as meant."""
    app = eos.Application(
        **BASE,
        processor=_Echo(),
        instance_id=0,
        state_dir=pathlib.Path("state", "here"),
        processing_guarantee="exactly-once-v2",  # type: ignore[arg-type]
    )
    assert app.config.instance_id == "0"
    assert app.config.state_dir == str(pathlib.Path("state", "here"))
    assert app.config.processing_guarantee == "exactly_once_v2"
    config = Config(
        **BASE, instance_id=3, processing_error_policy="Dead-Letter", dead_letter_topic="d"
    )  # type: ignore[arg-type]
    assert (config.instance_id, config.processing_error_policy) == ("3", "dead_letter")


def test_from_mapping_takes_python_values() -> None:
    """Python ints (and other client values) in a mapping work where the type is obvious."""
    config = Config.from_mapping(
        {
            **REQUIRED,
            "commit.interval.ms": 5,
            "shutdown.timeout.ms": 1500,
            "instance.id": 0,
            "producer.linger.ms": 7,
        }
    )
    assert (config.commit_interval_ms, config.shutdown_timeout_s) == (5, 1.5)
    assert config.instance_id == "0"
    assert config.producer_config["linger.ms"] == 7


@pytest.mark.parametrize(
    "props",
    [
        {"commit.interval.ms": 5.5},
        {"commit.interval.ms": None},
        {"input.topics": 7},
        {"producer.linger.ms": [1]},
        {7: "x"},
    ],
)
def test_from_mapping_wrong_types_are_config_errors(props: dict[Any, Any]) -> None:
    """Values and keys of unusable types are ConfigErrors, never AttributeError or TypeError."""
    with pytest.raises(ConfigError):
        Config.from_mapping({**REQUIRED, **props})


_ODD_VALUES: list[object] = [None, 1.5, True, object(), b"x", [], {}, -1, ""]


@pytest.mark.parametrize(
    "field",
    [
        "application_id",
        "bootstrap_servers",
        "input_topics",
        "processing_guarantee",
        "instance_id",
        "key_serde",
        "commit_interval_ms",
        "max_batch_records",
        "transaction_timeout_ms",
        "processing_error_policy",
        "dead_letter_topic",
        "state_dir",
        "shutdown_timeout_s",
        "bootstrap_timeout_ms",
        "max_aborts_without_progress",
        "metrics_port",
        "metrics_bind_address",
        "producer_config",
    ],
)
def test_any_odd_value_is_a_config_error_or_accepted(field: str) -> None:
    """No value of any type makes Config raise anything but ConfigError."""
    for value in _ODD_VALUES:
        with contextlib.suppress(ConfigError):
            Config(**{**BASE, field: value})


# -- item 5: eos run app:APP --config FILE ------------------------------------------------------


def _write_app_module(tmp_path: Path) -> str:
    name = f"eos_cfg_app_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(
        "import eos\n"
        "class P(eos.Processor):\n"
        "    def process(self, ctx, record):\n"
        "        pass\n"
        "APP = eos.Application(application_id='orders', bootstrap_servers='b:9092',\n"
        "    input_topics=['in'], processor=P(), key_serde='string', value_serde='json',\n"
        "    commit_interval_ms=300, producer_config={'linger.ms': 20, 'acks': 'all'})\n"
    )
    return name


def test_config_file_overrides_an_application_setting_by_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--config FILE replaces only the settings FILE names; the app's serdes and the rest stay."""
    monkeypatch.chdir(tmp_path)
    name = _write_app_module(tmp_path)
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])
    path = tmp_path / "override.properties"
    path.write_text("commit.interval.ms=250\nproducer.linger.ms=7\nbootstrap.servers=c:9093\n")
    app = load_application(f"{name}:APP", config_path=str(path), instance_id="4")
    config = app.config
    assert (config.key_serde, config.value_serde) == ("string", "json")
    assert (config.commit_interval_ms, config.bootstrap_servers) == (250, "c:9093")
    assert dict(config.producer_config) == {"linger.ms": "7", "acks": "all"}
    assert (config.application_id, config.instance_id) == ("orders", "4")


def test_with_properties_keeps_what_the_mapping_does_not_mention() -> None:
    """Config.with_properties changes the named settings only, client settings one by one."""
    base = Config(**BASE, key_serde="string", consumer_config={"session.timeout.ms": 9000})
    changed = base.with_properties({"max.batch.records": "10", "consumer.fetch.min.bytes": "5"})
    assert changed.key_serde == "string"
    assert changed.max_batch_records == 10
    assert dict(changed.consumer_config) == {"session.timeout.ms": 9000, "fetch.min.bytes": "5"}
    with pytest.raises(ConfigError, match="did you mean"):
        base.with_properties({"max.bach.records": "10"})
