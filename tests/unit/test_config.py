from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path
from typing import Any

import pytest

from eos.config import OWNED_KEYS, Config, parse_properties, redacted
from eos.errors import ConfigError
from eos.serde import JsonSerde, StringSerde

BASE: dict[str, Any] = {
    "application_id": "app",
    "bootstrap_servers": "localhost:9092",
    "input_topics": ["in"],
}


def make(**changes: Any) -> Config:
    return Config(**{**BASE, **changes})


# -- construction and validation ------------------------------------------------------------


def test_defaults() -> None:
    """A minimal config gets the documented defaults and a tuple of topics."""
    config = make()
    assert config.input_topics == ("in",)
    assert config.processing_guarantee == "exactly_once_v2"
    assert (config.commit_interval_ms, config.transaction_timeout_ms) == (100, 60_000)
    assert (config.instance_id, config.max_batch_records, config.state_dir) == (
        "0",
        100_000,
        "./state",
    )
    assert config.processing_error_policy == "fail"
    assert config.shutdown_timeout_s == 30.0
    assert config.transactional_id == "app-0"


def test_single_str_is_one_topic() -> None:
    """A bare str for input_topics means one topic, not one topic per character."""
    assert make(input_topics="orders").input_topics == ("orders",)


@pytest.mark.parametrize(
    ("changes", "key", "shown"),
    [
        ({"application_id": ""}, "application_id", "''"),
        ({"application_id": "my app"}, "application_id", "'my app'"),
        ({"instance_id": "a/b"}, "instance_id", "'a/b'"),
        ({"bootstrap_servers": ""}, "bootstrap_servers", "''"),
        ({"input_topics": []}, "input_topics", "[]"),
        ({"input_topics": [""]}, "input_topics", "''"),
        ({"input_topics": ["bad topic"]}, "input_topics", "'bad topic'"),
        ({"input_topics": ["a", "a"]}, "input_topics", "('a', 'a')"),
        ({"processing_guarantee": "exactly_once"}, "processing_guarantee", "'exactly_once'"),
        ({"processing_error_policy": "ignore"}, "processing_error_policy", "'ignore'"),
        ({"commit_interval_ms": 0}, "commit_interval_ms", "0"),
        ({"commit_interval_ms": True}, "commit_interval_ms", "True"),
        ({"max_batch_records": 0}, "max_batch_records", "0"),
        ({"transaction_timeout_ms": 50}, "transaction_timeout_ms", "50"),
        ({"processing_error_policy": "dead_letter"}, "dead_letter_topic", "None"),
        ({"dead_letter_topic": "in"}, "dead_letter_topic", "'in'"),
        ({"shutdown_timeout_s": 0}, "shutdown_timeout_s", "0"),
        ({"metrics_port": 70000}, "metrics_port", "70000"),
        ({"state_dir": ""}, "state_dir", "''"),
        ({"key_serde": "xml"}, "key_serde", "'xml'"),
        ({"value_serde": "avro"}, "value_serde", "'avro'"),
    ],
)
def test_validation_rules(changes: dict[str, Any], key: str, shown: str) -> None:
    """Each invalid value is a ConfigError naming the key and showing the bad value."""
    with pytest.raises(ConfigError) as info:
        make(**changes)
    assert info.value.key == key
    assert key in str(info.value)
    assert shown in str(info.value)


def test_messages_say_what_is_allowed() -> None:
    """Enumeration errors list the allowed values, and the old exactly_once gets a hint."""
    with pytest.raises(
        ConfigError, match=r"'exactly_once_v2', 'at_least_once', 'at_most_once'.*v2"
    ):
        make(processing_guarantee="exactly_once")
    with pytest.raises(ConfigError, match="'fail', 'skip', 'dead_letter'"):
        make(processing_error_policy="ignore")
    with pytest.raises(ConfigError, match=r">= commit_interval_ms \(100\)"):
        make(transaction_timeout_ms=50)


def test_transaction_timeout_rule_applies_only_to_exactly_once() -> None:
    """transaction_timeout_ms < commit_interval_ms is allowed without transactions."""
    assert make(processing_guarantee="at_least_once", transaction_timeout_ms=50)


def test_dead_letter_policy_with_topic_is_valid() -> None:
    """The dead_letter policy is accepted once a distinct dead-letter topic is set."""
    config = make(processing_error_policy="dead_letter", dead_letter_topic="in.dlq")
    assert config.dead_letter_topic == "in.dlq"


@pytest.mark.parametrize("field", ["producer_config", "consumer_config"])
@pytest.mark.parametrize("key", OWNED_KEYS)
def test_owned_keys_are_rejected_without_echoing_the_value(field: str, key: str) -> None:
    """A pass-through setting owned by the guarantee is a ConfigError naming only the key."""
    with pytest.raises(ConfigError, match="eos sets it from") as info:
        make(**{field: {key: "hunter2"}})
    assert info.value.key == key
    assert key in str(info.value)
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize("key", ["bootstrap.servers", "transaction.timeout.ms"])
def test_field_backed_keys_are_rejected_in_pass_through(key: str) -> None:
    """Pass-through settings may not bypass a validated Config field."""
    with pytest.raises(ConfigError, match="set Config"):
        make(producer_config={key: "1"})


def test_serdes_resolve() -> None:
    """Serde names resolve to built-ins and serde objects are kept as given."""
    serde = JsonSerde()
    config = make(key_serde="string", value_serde=serde)
    assert isinstance(config.resolved_key_serde(), StringSerde)
    assert config.resolved_value_serde() is serde
    assert config.value_serde is serde


def test_client_config_is_copied_and_read_only() -> None:
    """Changing the caller's dict later does not change the frozen config, which is read-only."""
    source = {"linger.ms": 1}
    config = make(producer_config=source)
    source["linger.ms"] = 99
    assert config.producer_config["linger.ms"] == 1
    with pytest.raises(TypeError):
        config.producer_config["x"] = 1  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.application_id = "other"  # type: ignore[misc]


def test_equality_hash_pickle_and_replace() -> None:
    """Configs compare by value, hash, pickle and work with dataclasses.replace."""
    config = make(producer_config={"sasl.password": "hunter2"})
    assert config == make(producer_config={"sasl.password": "hunter2"})
    assert hash(config) == hash(make(producer_config={"sasl.password": "hunter2"}))
    assert pickle.loads(pickle.dumps(config)) == config
    assert dataclasses.replace(config, commit_interval_ms=200).commit_interval_ms == 200


# -- secrets ------------------------------------------------------------------------------------


def test_secrets_never_in_repr_or_str() -> None:
    """Secret client settings are masked in repr and str; other settings are shown."""
    config = make(
        producer_config={"sasl.password": "hunter2", "linger.ms": 7},
        consumer_config={
            "sasl.oauthbearer.client.secret": "hunter2",
            "ssl.key.pem": "PRIVATE",
        },
    )
    for text in (repr(config), str(config)):
        assert "hunter2" not in text
        assert "PRIVATE" not in text
        assert "'linger.ms': 7" in text
        assert "[redacted]" in text


def test_redacted() -> None:
    """redacted masks secrets, keeps public certificates, and does not modify its input."""
    conf = {
        "sasl.password": "p",
        "ssl.key.password": "p",
        "ssl.keystore.password": "p",
        "sasl.oauthbearer.client.secret": "p",
        "sasl.oauthbearer.config": "p",
        "sasl.jaas.config": "p",
        "ssl.key.pem": "p",
        "ssl.certificate.pem": "CERT",
        "sasl.username": "alice",
    }
    out = redacted(conf)
    assert out["ssl.certificate.pem"] == "CERT"
    assert out["sasl.username"] == "alice"
    assert [k for k, v in out.items() if v == "[redacted]"] == list(conf)[:7]
    assert conf["sasl.password"] == "p"


# -- derived librdkafka settings ------------------------------------------------------------


def test_consumer_settings() -> None:
    """The consumer reads committed data only, never auto-commits, and keeps user overrides."""
    settings = make(consumer_config={"auto.offset.reset": "latest", "fetch.min.bytes": 5})
    s = settings.consumer_settings()
    assert s["bootstrap.servers"] == "localhost:9092"
    assert s["group.id"] == "app"
    assert s["enable.auto.commit"] is False
    assert s["enable.auto.offset.store"] is False
    assert s["isolation.level"] == "read_committed"
    assert s["auto.offset.reset"] == "latest"
    assert s["fetch.min.bytes"] == 5
    assert s["client.id"] == "app-0-consumer"
    assert make().consumer_settings()["auto.offset.reset"] == "earliest"


def test_consumer_static_membership() -> None:
    """group.instance.id defaults to the transactional id; an override is kept; "" removes it."""
    assert make(instance_id="3").consumer_settings()["group.instance.id"] == "app-3"
    kept = make(consumer_config={"group.instance.id": "mine"}).consumer_settings()
    assert kept["group.instance.id"] == "mine"
    assert (
        "group.instance.id"
        not in make(consumer_config={"group.instance.id": ""}).consumer_settings()
    )
    from_file = Config.from_mapping({**REQUIRED, "consumer.group.instance.id": ""})
    assert "group.instance.id" not in from_file.consumer_settings()
    assert "group.instance.id" not in make().producer_settings()


@pytest.mark.parametrize("guarantee", ["at_least_once", "at_most_once"])
def test_consumer_is_read_committed_for_every_guarantee(guarantee: str) -> None:
    """Even without transactions, only committed upstream data is read."""
    assert make(processing_guarantee=guarantee).consumer_settings()["isolation.level"] == (
        "read_committed"
    )


def test_producer_settings_exactly_once() -> None:
    """exactly_once_v2 gets a transactional, idempotent acks=all producer with low backoff."""
    s = make(instance_id="3", transaction_timeout_ms=30_000).producer_settings()
    assert s["transactional.id"] == "app-3"
    assert s["enable.idempotence"] is True
    assert s["acks"] == "all"
    assert s["transaction.timeout.ms"] == 30_000
    assert s["retry.backoff.ms"] == 10
    assert s["linger.ms"] == 5
    assert s["bootstrap.servers"] == "localhost:9092"


def test_producer_defaults_can_be_overridden() -> None:
    """retry.backoff.ms, linger.ms and client.id are defaults the user may change."""
    s = make(
        producer_config={"retry.backoff.ms": 50, "linger.ms": 0, "client.id": "me"}
    ).producer_settings()
    assert (s["retry.backoff.ms"], s["linger.ms"], s["client.id"]) == (50, 0, "me")


@pytest.mark.parametrize("guarantee", ["at_least_once", "at_most_once"])
def test_producer_settings_without_transactions(guarantee: str) -> None:
    """Non-transactional guarantees get an idempotent acks=all producer with no transactional.id."""
    s = make(processing_guarantee=guarantee).producer_settings()
    assert s["enable.idempotence"] is True
    assert s["acks"] == "all"
    assert "transactional.id" not in s
    assert "transaction.timeout.ms" not in s


def test_settings_are_fresh_dicts() -> None:
    """Each call returns a new dict, so callers may mutate it safely."""
    config = make()
    first = config.producer_settings()
    first["linger.ms"] = 1000
    assert config.producer_settings()["linger.ms"] == 5


def test_admin_settings_copy_only_connection_keys() -> None:
    """The admin client gets the producer's security and connection settings only."""
    config = make(
        producer_config={
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": "PLAIN",
            "sasl.password": "pw",
            "ssl.ca.location": "/ca",
            "socket.timeout.ms": 1000,
            "client.dns.lookup": "use_all_dns_ips",
            "linger.ms": 1,
        }
    )
    s = config.admin_settings()
    assert s["bootstrap.servers"] == "localhost:9092"
    assert "linger.ms" not in s
    for key in ("security.protocol", "sasl.mechanism", "sasl.password", "ssl.ca.location"):
        assert key in s
    assert s["socket.timeout.ms"] == 1000
    assert s["client.dns.lookup"] == "use_all_dns_ips"


# -- properties files ---------------------------------------------------------------------------


def test_parse_properties_syntax() -> None:
    """Comments, blank lines, the three separators, continuations and escapes parse as Java does."""
    text = (
        "# a comment\n"
        "! another comment\n"
        "\n"
        "   a = 1  \n"
        "b: 2\n"
        "c 3\n"
        "d=x,\\\n"
        "    y,\\\n"
        "    z\n"
        "e=tab\\there\\u00e9\n"
        "key\\=with\\:seps = v\n"
        "f=\n"
        "# comment ending in backslash \\\n"
        "g=not swallowed\r\n"
        "h=first\\\n"
        "# continued, not a comment\n"
        "b=last wins\n"
    )
    assert parse_properties(text) == {
        "a": "1",
        "b": "last wins",
        "c": "3",
        "d": "x,y,z",
        "e": "tab\there\u00e9",
        "key=with:seps": "v",
        "f": "",
        "g": "not swallowed",
        "h": "first# continued, not a comment",
    }


def test_parse_properties_bad_unicode_escape() -> None:
    """A malformed \\u escape is a ConfigError with the line number, not a crash."""
    with pytest.raises(ConfigError, match="line 2"):
        parse_properties("a=1\nb=\\u12\n")


def test_from_mapping_maps_every_key() -> None:
    """Every eos property maps to its field, with ints parsed and ms converted to seconds."""
    config = Config.from_mapping(
        {
            "application.id": "app",
            "bootstrap.servers": "b:9092",
            "input.topics": "a, b ,,c",
            "processing.guarantee": "at_least_once",
            "instance.id": "7",
            "key.serde": "string",
            "value.serde": "json",
            "commit.interval.ms": "250",
            "max.batch.records": "500",
            "transaction.timeout.ms": "10000",
            "processing.error.policy": "dead_letter",
            "dead.letter.topic": "dlq",
            "state.dir": "/tmp/s",
            "shutdown.timeout.ms": "1500",
            "metrics.port": "9100",
            "metrics.bind.address": "0.0.0.0",
        }
    )
    assert config.input_topics == ("a", "b", "c")
    assert config.processing_guarantee == "at_least_once"
    assert (config.instance_id, config.key_serde, config.value_serde) == ("7", "string", "json")
    assert (config.commit_interval_ms, config.max_batch_records) == (250, 500)
    assert config.transaction_timeout_ms == 10_000
    assert (config.processing_error_policy, config.dead_letter_topic) == ("dead_letter", "dlq")
    assert (config.state_dir, config.shutdown_timeout_s) == ("/tmp/s", 1.5)
    assert (config.metrics_port, config.metrics_bind_address) == (9100, "0.0.0.0")


REQUIRED = {"application.id": "app", "bootstrap.servers": "b:9092", "input.topics": "in"}


def test_client_setting_prefixes() -> None:
    """producer./consumer. go to one client, other dotted keys to both, and prefixed ones win."""
    config = Config.from_mapping(
        {
            **REQUIRED,
            "security.protocol": "SSL",
            "linger.ms": "1",
            "producer.linger.ms": "20",
            "consumer.fetch.max.bytes": "1000",
        }
    )
    assert config.producer_config == {"security.protocol": "SSL", "linger.ms": "20"}
    assert config.consumer_config == {
        "security.protocol": "SSL",
        "linger.ms": "1",
        "fetch.max.bytes": "1000",
    }


@pytest.mark.parametrize("spelling", ["exactly_once_v2", "exactly-once-v2"])
def test_exactly_once_spellings(spelling: str) -> None:
    """Both Kafka Streams' and the hyphenated spelling select exactly_once_v2."""
    config = Config.from_mapping({**REQUIRED, "processing.guarantee": spelling})
    assert config.processing_guarantee == "exactly_once_v2"


@pytest.mark.parametrize(
    ("props", "key"),
    [
        ({"processing.guarantee": "exactly_once"}, "processing_guarantee"),
        ({"commit.interval.ms": "soon"}, "commit.interval.ms"),
        ({"metrics.port": "http"}, "metrics.port"),
        ({"applicationid": "x"}, "applicationid"),
        ({"producer.": "x"}, "producer."),
        ({"isolation.level": "read_uncommitted"}, "isolation.level"),
        ({"consumer.group.id": "other"}, "group.id"),
    ],
)
def test_from_mapping_errors_name_the_key(props: dict[str, str], key: str) -> None:
    """Bad values, unknown keys and owned client keys in properties are ConfigErrors naming them."""
    with pytest.raises(ConfigError) as info:
        Config.from_mapping({**REQUIRED, **props})
    assert info.value.key == key


@pytest.mark.parametrize("missing", list(REQUIRED))
def test_from_mapping_requires_keys(missing: str) -> None:
    """Each required property missing is a ConfigError naming it."""
    props = {k: v for k, v in REQUIRED.items() if k != missing}
    with pytest.raises(ConfigError, match=f"{missing} is required"):
        Config.from_mapping(props)


def test_overrides_win_over_properties() -> None:
    """Keyword overrides replace file values and may supply required ones; unknown ones fail."""
    config = Config.from_mapping(
        {"application.id": "app", "bootstrap.servers": "b:1", "instance.id": "1"},
        instance_id="2",
        input_topics=["x"],
    )
    assert (config.instance_id, config.input_topics) == ("2", ("x",))
    with pytest.raises(ConfigError, match="nope"):
        Config.from_mapping(REQUIRED, nope=1)


def test_empty_optional_values_mean_none() -> None:
    """An empty metrics.port or dead.letter.topic means unset."""
    config = Config.from_mapping({**REQUIRED, "metrics.port": "", "dead.letter.topic": ""})
    assert (config.metrics_port, config.dead_letter_topic) == (None, None)


def test_from_properties_file(tmp_path: Path) -> None:
    """from_properties reads a file end to end and keeps secrets out of the repr."""
    path = tmp_path / "app.properties"
    path.write_text(
        "# eos app\n"
        "application.id: orders-app\n"
        "bootstrap.servers = localhost:9092\n"
        "input.topics = a,\\\n"
        "               b\n"
        "producer.sasl.password = hunter2\n",
        encoding="utf-8",
    )
    config = Config.from_properties(path, instance_id="5")
    assert config.application_id == "orders-app"
    assert config.input_topics == ("a", "b")
    assert config.transactional_id == "orders-app-5"
    assert config.producer_config["sasl.password"] == "hunter2"
    assert "hunter2" not in repr(config)


def test_from_properties_missing_file(tmp_path: Path) -> None:
    """An unreadable properties file is a ConfigError naming the path."""
    with pytest.raises(ConfigError, match=r"missing\.properties"):
        Config.from_properties(tmp_path / "missing.properties")
