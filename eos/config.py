"""Application configuration and the librdkafka settings derived from it.

:class:`Config` is validated once, at construction: a bad value raises
:class:`~eos.errors.ConfigError` naming the setting, the value and what is
allowed. Its ``consumer_settings()``, ``producer_settings()`` and
``admin_settings()`` are the one place where eos settings become librdkafka
dictionaries; the settings a processing guarantee depends on (see
:data:`OWNED_KEYS`) cannot be overridden by pass-through client settings.

A config can also be read from a Java-style ``.properties`` file with the
Kafka Streams spelling of the settings (``application.id``,
``commit.interval.ms``, ``producer.``/``consumer.`` prefixes, ...): see
:meth:`Config.from_properties` and :meth:`Config.from_mapping`. The file
syntax lives in :mod:`eos.properties`; ``parse_properties`` is re-exported
here for compatibility.

Secret client settings (passwords, private keys, JAAS and OAuth
configuration) never appear in ``repr(config)`` or in error messages; use
:func:`redacted` before logging any client dictionary.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Final, Literal, TypeAlias

from eos.errors import ConfigError
from eos.properties import (
    INPUT_SERDES_PREFIX,
    PROPERTY_FIELDS,
    PropertyValue,
    client_value,
    did_you_mean,
    parse_input_serde_key,
    parse_properties,
    parse_property_value,
    read_properties,
    unknown_key_hint,
)
from eos.serde import Serde, resolve_serde

__all__ = [
    "DEFAULT_BOOTSTRAP_TIMEOUT_MS",
    "DEFAULT_COMMIT_INTERVAL_MS",
    "DEFAULT_FETCH_QUEUE_BACKOFF_MS",
    "DEFAULT_INSTANCE_ID",
    "DEFAULT_LATE_RECORD_POLICY",
    "DEFAULT_LINGER_MS",
    "DEFAULT_MAX_ABORTS_WITHOUT_PROGRESS",
    "DEFAULT_MAX_BATCH_RECORDS",
    "DEFAULT_MAX_TASK_IDLE_MS",
    "DEFAULT_METRICS_BIND_ADDRESS",
    "DEFAULT_POLL_TIMEOUT_S",
    "DEFAULT_PROCESSING_ERROR_POLICY",
    "DEFAULT_PROCESSING_GUARANTEE",
    "DEFAULT_SHUTDOWN_TIMEOUT_S",
    "DEFAULT_STATE_DIR",
    "DEFAULT_TRANSACTIONAL_RETRY_BACKOFF_MS",
    "DEFAULT_TRANSACTION_TIMEOUT_MS",
    "ERROR_POLICIES",
    "GUARANTEES",
    "LATE_RECORD_POLICIES",
    "OWNED_KEYS",
    "ClientValue",
    "Config",
    "ErrorPolicy",
    "Guarantee",
    "InputSerdeSpec",
    "LatePolicy",
    "check_input_serdes",
    "parse_properties",
    "redacted",
]

Guarantee: TypeAlias = Literal["exactly_once_v2", "at_least_once", "at_most_once"]
"""Processing guarantee: each input record's effects become visible exactly
once (transactions), at least once (commit offsets after producing), or at
most once (commit offsets before processing)."""

ErrorPolicy: TypeAlias = Literal["fail", "skip", "dead_letter"]
"""What happens when the processor or a deserializer raises for a record."""

ClientValue: TypeAlias = str | int | float | bool
"""A librdkafka setting value."""

InputSerdeSpec: TypeAlias = tuple[str | Serde | None, str | Serde | None]
"""``(key_serde, value_serde)`` of one input topic; None: the application's."""

GUARANTEES: Final[tuple[Guarantee, ...]] = ("exactly_once_v2", "at_least_once", "at_most_once")
ERROR_POLICIES: Final[tuple[ErrorPolicy, ...]] = ("fail", "skip", "dead_letter")
LatePolicy = Literal["skip", "dead_letter"]
LATE_RECORD_POLICIES: Final[tuple[LatePolicy, ...]] = ("skip", "dead_letter")
DEFAULT_LATE_RECORD_POLICY: Final[LatePolicy] = "skip"
DEFAULT_MAX_TASK_IDLE_MS: Final = 0
"""How long a partition joined with a table waits for the other when that one is
read to its end (Kafka Streams' ``max.task.idle.ms``); -1: never wait."""

DEFAULT_MAX_IN_FLIGHT: Final = 100
"""How many records an :class:`~eos.processor.AsyncProcessor` processes at once."""
DEFAULT_RECORD_TIMEOUT_MS: Final = 30_000
"""How long one record of an :class:`~eos.processor.AsyncProcessor` may take
before it is cancelled and handled as a processing error."""

ASYNC_TRANSACTION_SHARE: Final = 0.8
"""The share of ``transaction_timeout_ms`` a commit may wait for the records of an
async processor in flight; past it they are cancelled and the batch aborted."""

DEFAULT_PROCESSING_GUARANTEE: Final[Guarantee] = "exactly_once_v2"
DEFAULT_COMMIT_INTERVAL_MS: Final = 100
"""Kafka Streams' default under exactly-once: short transactions keep
end-to-end latency low for read_committed readers downstream."""
DEFAULT_TRANSACTION_TIMEOUT_MS: Final = 60_000
DEFAULT_MAX_BATCH_RECORDS: Final = 100_000
DEFAULT_INSTANCE_ID: Final = "0"
DEFAULT_STATE_DIR: Final = "./state"
DEFAULT_PROCESSING_ERROR_POLICY: Final[ErrorPolicy] = "fail"
DEFAULT_SHUTDOWN_TIMEOUT_S: Final = 30.0
DEFAULT_BOOTSTRAP_TIMEOUT_MS: Final = 10_000
"""How long the start-up check waits for the cluster to answer before it
raises ConfigError: long enough for a broker that is still starting, short
enough that a wrong address or a broker that is not running is reported at
once instead of after minutes of reconnect log lines."""
DEFAULT_MAX_ABORTS_WITHOUT_PROGRESS: Final = 10
"""Consecutive aborts of a batch, with no commit and no record found to blame in
between, after which the instance stops with AbortLimitError. Outages and
rebalances do not count: they are retried with backoff for as long as they last."""
DEFAULT_METRICS_BIND_ADDRESS: Final = "127.0.0.1"
DEFAULT_POLL_TIMEOUT_S: Final = 0.1
"""How long one ``consume()`` call waits for records. It bounds how late a
due commit or a stop request is noticed when input is idle; it is not a
setting because nothing is gained by tuning it."""
DEFAULT_LINGER_MS: Final = 5
DEFAULT_TRANSACTIONAL_RETRY_BACKOFF_MS: Final = 10
"""``retry.backoff.ms`` for the transactional producer. The coordinator
answers CONCURRENT_TRANSACTIONS while the previous commit is still being
completed, and librdkafka retries after ``retry.backoff.ms`` (default 100 ms),
which dominates back-to-back short transactions (confluent-kafka-python issue
967; Kafka lowered its own backoff for this in KAFKA-5477)."""

DEFAULT_FETCH_QUEUE_BACKOFF_MS: Final = 10
"""``fetch.queue.backoff.ms`` for the consumer. When its prefetch queue is over
``queued.min.messages``/``queued.max.messages.kbytes``, librdkafka postpones
the partition's next fetch by this long (default 1000 ms). The engine drains a
full queue in well under a second and then waited for the backoff to end: on
a 200,000-record backlog it ran at 141,000 records/s with the default and
390,000 with 10 ms (benchmarks/run.py)."""

OWNED_KEYS: Final = (
    "isolation.level",
    "enable.auto.commit",
    "transactional.id",
    "enable.idempotence",
    "enable.auto.offset.store",
    "group.id",
)
"""librdkafka settings the processing guarantee depends on; setting them in
``producer_config``/``consumer_config`` is a ConfigError."""

_OWNED_BY: Final[Mapping[str, str]] = {
    "isolation.level": "processing_guarantee",
    "enable.auto.commit": "processing_guarantee",
    "enable.auto.offset.store": "processing_guarantee",
    "enable.idempotence": "processing_guarantee",
    "transactional.id": "application_id and instance_id",
    "group.id": "application_id",
}
# Pass-through keys that would silently bypass a validated field.
_FIELD_KEYS: Final[Mapping[str, str]] = {
    "bootstrap.servers": "bootstrap_servers",
    "metadata.broker.list": "bootstrap_servers",
    "transaction.timeout.ms": "transaction_timeout_ms",
}

_PROPERTY_OF: Final[Mapping[str, str]] = {
    **{f: p for p, f in PROPERTY_FIELDS.items()},
    "input_serdes": "input.serdes.<topic>.key/.value",
    "producer_config": "producer.*",
    "consumer_config": "consumer.*",
}
_REQUIRED: Final = ("application.id", "bootstrap.servers", "input.topics")

_ID_RE: Final = re.compile(r"[A-Za-z0-9._-]+")
_TOPIC_RE: Final = re.compile(r"[A-Za-z0-9._-]{1,249}")
_SECRET_MARKERS: Final = (
    "password",
    "secret",
    "passphrase",
    "jaas.config",
    "oauthbearer.config",
    "key.pem",
    "private.key",
    "keystore.key",
    "user.info",
)
_CONNECTION_KEYS: Final = ("security.protocol", "client.dns.lookup")
_CONNECTION_PREFIXES: Final = ("sasl.", "ssl.", "socket.")
_REDACTED: Final = "[redacted]"


def _is_secret(key: str) -> bool:
    lowered = key.lower()
    return any(marker in lowered for marker in _SECRET_MARKERS)


def redacted(conf: Mapping[str, object]) -> dict[str, object]:
    """Return a copy of a client configuration that is safe to log.

    Values of secret settings (any key containing ``password``, ``secret``,
    ``passphrase``, ``jaas.config``, ``oauthbearer.config``, ``key.pem``,
    ``private.key``, ``keystore.key`` or ``user.info``) are replaced by
    ``"[redacted]"``. Certificates (``ssl.certificate.pem``, ``ssl.ca.pem``)
    are public and kept.

    Args:
        conf: A librdkafka-style settings mapping.

    Returns:
        A new dict with the same keys.
    """
    return {k: _REDACTED if _is_secret(k) else v for k, v in conf.items()}


def _invalid(name: str, value: object, allowed: str) -> ConfigError:
    prop = _PROPERTY_OF.get(name)
    label = f"{name} ({prop})" if prop else name
    return ConfigError(f"invalid {label}: {value!r}; {allowed}", key=name)


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _invalid(name, value, f"must be an integer >= {minimum}")


def _check_topic(name: str, topic: object) -> None:
    if not isinstance(topic, str) or not _TOPIC_RE.fullmatch(topic) or topic in (".", ".."):
        raise _invalid(
            name, topic, "a topic name is 1-249 characters of A-Z a-z 0-9 . _ - (not '.' or '..')"
        )


_SCHEMES: Final = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
_HOST_RE: Final = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9._-]*[A-Za-z0-9_])?")
_PORT_RE: Final = re.compile(r"[0-9]{1,5}")


def _broker_problem(entry: str) -> str | None:
    """What is wrong with one ``bootstrap.servers`` entry, or None."""
    scheme, sep, rest = entry.rpartition("://")
    if sep and scheme.upper() not in _SCHEMES:
        return (
            f"has the scheme {scheme}://, which Kafka clients do not know: write {rest} "
            f"(a listener prefix may only be {', '.join(s + '://' for s in _SCHEMES)})"
        )
    if rest.startswith("["):
        host, bracket, port = rest[1:].partition("]")
        if not bracket or not host:
            return "has no closing ']' after its IPv6 address"
        if not port.startswith(":"):
            return f"has no port: write {rest}:9092"
        port = port[1:]
    else:
        if rest.count(":") > 1:
            return "has more than one ':': an IPv6 address goes in brackets, e.g. [::1]:9092"
        host, colon, port = rest.partition(":")
        if not colon:
            return f"has no port: write {rest}:9092"
        if not _HOST_RE.fullmatch(host):
            return f"has {host!r} where a host name or address belongs"
    if not _PORT_RE.fullmatch(port) or not 1 <= int(port) <= 65535:
        return f"has the port {port!r}: a port is a number 1-65535"
    return None


def _check_bootstrap_servers(value: object) -> None:
    allowed = "must be a comma-separated list of host:port, e.g. localhost:9092"
    if not isinstance(value, str):
        raise _invalid("bootstrap_servers", value, allowed)
    entries = [entry.strip() for entry in value.split(",") if entry.strip()]
    if not entries:
        raise _invalid("bootstrap_servers", value, allowed)
    for entry in entries:
        problem = _broker_problem(entry)
        if problem is not None:
            raise _invalid("bootstrap_servers", value, f"{entry!r} {problem}")


def _normalized(value: object, allowed: Sequence[str]) -> object:
    """``value`` as one of ``allowed`` if it is only spelt differently
    (case, ``-`` for ``_``, surrounding blanks); else unchanged."""
    if isinstance(value, str):
        spelling = value.strip().lower().replace("-", "_")
        if spelling in allowed:
            return spelling
    return value


def _check_client_setting(key: str, value: object, where: str, written: str = "") -> None:
    """Ask librdkafka, offline, whether ``key`` exists and takes ``value``.

    ``where`` places the key in a message ("in producer_config");
    ``written`` is the key as a properties mapping spelt it, if it came from
    one (``producer.linger.ms``), so the suggestions are spelt the same way.
    """
    from eos._admin import LIBRDKAFKA_PROPERTIES, UNKNOWN_SETTING, client_setting_problem

    problem = client_setting_problem(key, value)
    if problem == UNKNOWN_SETTING:
        if not written:
            message = f"unknown librdkafka setting {key!r} {where}" + did_you_mean(
                key, LIBRDKAFKA_PROPERTIES
            )
        elif written == key:
            message = (
                f"unknown setting {key!r}: neither an eos setting nor a librdkafka one"
                + unknown_key_hint(key, LIBRDKAFKA_PROPERTIES)
            )
        else:
            message = f"unknown setting {written!r}: librdkafka has no setting {key!r}" + (
                did_you_mean(key, LIBRDKAFKA_PROPERTIES, prefix=written[: -len(key)])
            )
        raise ConfigError(message, key=key)
    if problem is not None:
        # librdkafka may quote the value: never show a secret's.
        hidden = _is_secret(key) and str(value) in problem
        detail = "librdkafka rejects its value" if hidden else problem
        raise ConfigError(f"invalid librdkafka setting {key!r} {where}: {detail}", key=key)


def _reject_owned(key: str, where: str) -> None:
    # Name the key only, never its value: it might be anything.
    lowered = key.strip().lower()
    if lowered in _OWNED_BY:
        raise ConfigError(
            f"{key!r} may not be set {where}: eos sets it from {_OWNED_BY[lowered]} "
            "so that the processing guarantee holds",
            key=key,
        )
    if lowered in _FIELD_KEYS:
        raise ConfigError(
            f"{key!r} may not be set {where}: set Config.{_FIELD_KEYS[lowered]} instead",
            key=key,
        )


def check_input_serdes(
    value: object, topics: Sequence[str]
) -> types.MappingProxyType[str, InputSerdeSpec]:
    """``input_serdes`` checked against ``input_topics`` and read-only, serde specs kept."""
    allowed = "must be a mapping of input topic -> (key_serde, value_serde)"
    if not isinstance(value, Mapping):
        raise _invalid("input_serdes", value, allowed)
    checked: dict[str, InputSerdeSpec] = {}
    for topic, pair in value.items():
        if topic not in topics:
            raise _invalid(
                "input_serdes",
                topic,
                f"it is not one of input_topics {list(topics)}" + did_you_mean(str(topic), topics),
            )
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise _invalid(
                "input_serdes",
                pair,
                f"the serdes of {topic!r} must be a pair (key_serde, value_serde); "
                "None in it means key_serde/value_serde",
            )
        key_serde, value_serde = pair
        for spec in pair:
            if spec is not None:
                resolve_serde(spec, what="input_serdes")
        checked[topic] = (key_serde, value_serde)
    return types.MappingProxyType(checked)


def _client_config(name: str, value: object) -> types.MappingProxyType[str, ClientValue]:
    if not isinstance(value, Mapping):
        raise _invalid(name, value, "must be a mapping of librdkafka settings")
    for key in value:
        if not isinstance(key, str):
            raise _invalid(name, key, "setting names must be str")
        _reject_owned(key, f"in {name}")
        _check_client_setting(key, client_value(key, value[key]), f"in {name}")
    # A read-only copy: later changes to the caller's dict cannot reach a frozen config.
    return types.MappingProxyType(dict(value))


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class Config:
    """Everything an eos application needs to know, validated at construction.

    Attributes:
        application_id: Names the consumer group, the transactional ids and
            the changelog topics. ``[A-Za-z0-9._-]`` only. Changing it starts
            the application from scratch.
        bootstrap_servers: Comma-separated ``host:port`` list (a
            ``PLAINTEXT://``-style listener prefix is allowed). Checked when
            the config is built: a missing port, an unknown scheme or an
            unbracketed IPv6 address is a ConfigError before any connection.
        input_topics: Topics to consume. Any sequence, or one topic as a
            bare ``str``; stored as a tuple.
        processing_guarantee: ``"exactly_once_v2"`` (default),
            ``"at_least_once"`` or ``"at_most_once"``; other spellings of the
            same (``"exactly-once-v2"``, upper case) are normalized.
        instance_id: Distinguishes instances of one application; makes the
            transactional id ``<application_id>-<instance_id>``, which must be
            stable across restarts of the same instance and unique among
            running ones. ``[A-Za-z0-9._-]`` only; an ``int`` is taken as
            its decimal string.
        key_serde: ``"bytes"``, ``"string"``/``"str"``, ``"json"`` or a
            :class:`~eos.serde.Serde`; the original spec is kept.
        value_serde: Same, for values.
        input_serdes: ``{topic: (key_serde, value_serde)}`` for input topics
            whose records are not in the format of ``key_serde``/``value_serde``
            (which stay the default for the topics not listed); a None part
            uses the default too. Every topic must be one of ``input_topics``.
            Stored read-only.
        commit_interval_ms: How often the open transaction (or the offsets)
            is committed.
        max_batch_records: Most records processed in one transaction
            before it is committed (usually ``commit_interval_ms`` ends a
            transaction first). It does not size the consumer's fetches: the
            engine asks each ``consume()`` call for at most 5,000 records
            (fewer when the open transaction is near this limit).
        transaction_timeout_ms: The broker aborts a transaction open longer
            than this; under exactly_once_v2 it must be >= commit_interval_ms.
        processing_error_policy: ``"fail"``, ``"skip"`` or ``"dead_letter"``
            for records whose processing or deserialization raises.
        dead_letter_topic: Where ``"dead_letter"`` sends failed records.
            Required by that policy and allowed only with it; must not be an
            input topic.
        late_record_policy: What a window does with a record that arrives
            after its window closed (end + grace): ``"skip"`` (the default;
            counted in ``eos_late_records_total``) or ``"dead_letter"`` (also
            copied to the dead-letter topic, so it needs
            ``processing_error_policy="dead_letter"``).
        max_task_idle_ms: With tables (stream-table joins): how long the
            records of a partition wait for the table partition of the same
            number when that one has no record buffered and is read to its
            end, so that they are processed in timestamp order with the
            table's updates (Kafka Streams' ``max.task.idle.ms``). 0 (the
            default) waits only for records already on their way; -1 never
            waits. See docs/joins.md.
        max_in_flight: For an :class:`~eos.processor.AsyncProcessor`: the most
            records being processed at once (default 100); consumption
            pauses while that many are in flight. Ignored by a synchronous
            processor. See docs/async.md.
        record_timeout_ms: For an :class:`~eos.processor.AsyncProcessor`: how
            long one record may take (default 30 s); then its ``process`` is
            cancelled and the record goes through ``processing_error_policy``
            as a :class:`~eos.errors.RecordTimeout`. With ``commit_interval_ms``
            it must stay within 80% of ``transaction_timeout_ms``: a commit waits
            for the records in flight.
        state_dir: Directory of the local state stores; a ``pathlib.Path``
            (any ``os.PathLike``) is stored as ``str``.
        shutdown_timeout_s: How long a stop may take before it is forced: the
            final commit, an abort, the flush of the producer.
        bootstrap_timeout_ms: How long the start-up check waits for the
            cluster to answer before it raises ConfigError (default 10 s).
        max_aborts_without_progress: Consecutive aborts of a batch without a
            commit or a newly blamed record after which the instance stops
            with :class:`~eos.errors.AbortLimitError` (outages and rebalances
            do not count; they back off up to 10 s between attempts).
        metrics_port: Port of the Prometheus endpoint (0 picks a free one),
            or ``None`` for none.
        metrics_bind_address: Address the Prometheus endpoint binds to.
        lineage_headers: Stamp every record a processor sends (``ctx.send``,
            the DSL's ``.to()``) with an ``eos.lineage`` header naming the
            input record it came from (``<topic>/<partition>/<offset>/<n>``,
            ``n`` counting that record's outputs from 0), so ``eos verify``
            can prove exactly-once from outside (see docs/verify.md).
            Changelog, repartition and dead-letter records get none, nor do
            records sent by timers and punctuations. Default False.
        producer_config: librdkafka settings passed to the producer; may not
            contain :data:`OWNED_KEYS`, ``bootstrap.servers`` or
            ``transaction.timeout.ms``. Stored read-only; masked in ``repr``.
        consumer_config: Same, for the consumer.

    Every key of ``producer_config``/``consumer_config`` is checked against
    the bundled librdkafka when the config is built (offline: no client is
    created): an unknown name or a value librdkafka rejects is a ConfigError,
    with "did you mean" suggestions for a misspelt name.
    """

    application_id: str
    bootstrap_servers: str
    input_topics: Sequence[str]
    processing_guarantee: Guarantee = DEFAULT_PROCESSING_GUARANTEE
    instance_id: str = DEFAULT_INSTANCE_ID
    key_serde: str | Serde = "bytes"
    value_serde: str | Serde = "bytes"
    input_serdes: Mapping[str, InputSerdeSpec] = field(default_factory=dict, hash=False)
    commit_interval_ms: int = DEFAULT_COMMIT_INTERVAL_MS
    max_batch_records: int = DEFAULT_MAX_BATCH_RECORDS
    transaction_timeout_ms: int = DEFAULT_TRANSACTION_TIMEOUT_MS
    processing_error_policy: ErrorPolicy = DEFAULT_PROCESSING_ERROR_POLICY
    dead_letter_topic: str | None = None
    late_record_policy: LatePolicy = DEFAULT_LATE_RECORD_POLICY
    max_task_idle_ms: int = DEFAULT_MAX_TASK_IDLE_MS
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    record_timeout_ms: int = DEFAULT_RECORD_TIMEOUT_MS
    state_dir: str = DEFAULT_STATE_DIR
    shutdown_timeout_s: float = DEFAULT_SHUTDOWN_TIMEOUT_S
    bootstrap_timeout_ms: int = DEFAULT_BOOTSTRAP_TIMEOUT_MS
    max_aborts_without_progress: int = DEFAULT_MAX_ABORTS_WITHOUT_PROGRESS
    metrics_port: int | None = None
    metrics_bind_address: str = DEFAULT_METRICS_BIND_ADDRESS
    lineage_headers: bool = False
    producer_config: Mapping[str, ClientValue] = field(default_factory=dict, repr=False, hash=False)
    consumer_config: Mapping[str, ClientValue] = field(default_factory=dict, repr=False, hash=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # the dataclass is frozen
        if isinstance(self.instance_id, int) and not isinstance(self.instance_id, bool):
            set_(self, "instance_id", str(self.instance_id))
        if isinstance(self.state_dir, os.PathLike):
            set_(self, "state_dir", os.fspath(self.state_dir))
        set_(self, "processing_guarantee", _normalized(self.processing_guarantee, GUARANTEES))
        set_(
            self,
            "processing_error_policy",
            _normalized(self.processing_error_policy, ERROR_POLICIES),
        )
        for name in ("application_id", "instance_id"):
            value = getattr(self, name)
            if not isinstance(value, str) or not _ID_RE.fullmatch(value):
                raise _invalid(name, value, "must be non-empty, of A-Z a-z 0-9 . _ - only")
        _check_bootstrap_servers(self.bootstrap_servers)

        topics: object = self.input_topics
        if isinstance(topics, str):
            topics = (topics,)
        if not isinstance(topics, Sequence) or not topics:
            raise _invalid("input_topics", topics, "must be a non-empty sequence of topic names")
        topics = tuple(topics)
        for topic in topics:
            _check_topic("input_topics", topic)
        if len(set(topics)) != len(topics):
            raise _invalid("input_topics", topics, "each topic may be listed once")
        set_(self, "input_topics", topics)

        if self.processing_guarantee not in GUARANTEES:
            hint = " (exactly_once v1 is gone from Kafka: use 'exactly_once_v2')"
            raise _invalid(
                "processing_guarantee",
                self.processing_guarantee,
                f"allowed: {', '.join(map(repr, GUARANTEES))}"
                + (hint if str(self.processing_guarantee).startswith("exactly") else ""),
            )
        resolve_serde(self.key_serde, what="key_serde")
        resolve_serde(self.value_serde, what="value_serde")
        set_(self, "input_serdes", check_input_serdes(self.input_serdes, topics))

        _check_int("commit_interval_ms", self.commit_interval_ms, 1)
        _check_int("max_batch_records", self.max_batch_records, 1)
        _check_int("transaction_timeout_ms", self.transaction_timeout_ms, 1)
        _check_int("max_aborts_without_progress", self.max_aborts_without_progress, 1)
        _check_int("bootstrap_timeout_ms", self.bootstrap_timeout_ms, 1)
        _check_int("max_task_idle_ms", self.max_task_idle_ms, -1)
        _check_int("max_in_flight", self.max_in_flight, 1)
        _check_int("record_timeout_ms", self.record_timeout_ms, 1)
        if (
            self.processing_guarantee == "exactly_once_v2"
            and self.transaction_timeout_ms < self.commit_interval_ms
        ):
            raise _invalid(
                "transaction_timeout_ms",
                self.transaction_timeout_ms,
                f"must be >= commit_interval_ms ({self.commit_interval_ms}) under exactly_once_v2, "
                "or the broker aborts transactions before they are due to commit",
            )

        if self.processing_error_policy not in ERROR_POLICIES:
            raise _invalid(
                "processing_error_policy",
                self.processing_error_policy,
                f"allowed: {', '.join(map(repr, ERROR_POLICIES))}",
            )
        if self.dead_letter_topic is not None:
            _check_topic("dead_letter_topic", self.dead_letter_topic)
            if self.processing_error_policy != "dead_letter":
                raise _invalid(
                    "dead_letter_topic",
                    self.dead_letter_topic,
                    "is used only by processing_error_policy='dead_letter' "
                    f"(it is {self.processing_error_policy!r}): set that policy "
                    "(processing.error.policy=dead_letter) or leave dead_letter_topic unset",
                )
            if self.dead_letter_topic in topics:
                raise _invalid(
                    "dead_letter_topic",
                    self.dead_letter_topic,
                    "must not be one of input_topics (failed records would be read again)",
                )
        elif self.processing_error_policy == "dead_letter":
            raise _invalid(
                "dead_letter_topic", None, "required when processing_error_policy='dead_letter'"
            )
        set_(self, "late_record_policy", _normalized(self.late_record_policy, LATE_RECORD_POLICIES))
        if self.late_record_policy not in LATE_RECORD_POLICIES:
            raise _invalid(
                "late_record_policy",
                self.late_record_policy,
                f"allowed: {', '.join(map(repr, LATE_RECORD_POLICIES))}",
            )
        if self.late_record_policy == "dead_letter" and self.dead_letter_topic is None:
            raise _invalid(
                "late_record_policy",
                self.late_record_policy,
                "needs the dead-letter topic: set processing_error_policy='dead_letter' and "
                "dead_letter_topic, or use 'skip'",
            )

        if not isinstance(self.state_dir, str) or not self.state_dir:
            raise _invalid("state_dir", self.state_dir, "must be a non-empty path")
        timeout = self.shutdown_timeout_s
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, (int, float))
            or not math.isfinite(timeout)
            or timeout <= 0
        ):
            raise _invalid("shutdown_timeout_s", timeout, "must be a number of seconds > 0")
        set_(self, "shutdown_timeout_s", float(timeout))
        port = self.metrics_port
        if port is not None and (
            isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535
        ):
            raise _invalid("metrics_port", port, "must be None or an integer 0-65535")
        if not isinstance(self.metrics_bind_address, str) or not self.metrics_bind_address:
            raise _invalid(
                "metrics_bind_address", self.metrics_bind_address, "must be a non-empty address"
            )
        if not isinstance(self.lineage_headers, bool):
            raise _invalid("lineage_headers", self.lineage_headers, "must be True or False")

        set_(self, "producer_config", _client_config("producer_config", self.producer_config))
        set_(self, "consumer_config", _client_config("consumer_config", self.consumer_config))

    def __repr__(self) -> str:
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("producer_config", "consumer_config"):
                value = redacted(value)
            elif isinstance(value, Mapping):
                value = dict(value)
            parts.append(f"{f.name}={value!r}")
        return f"Config({', '.join(parts)})"

    def __reduce__(self) -> tuple[object, ...]:
        # MappingProxyType does not pickle; rebuild from plain dicts (revalidating).
        kwargs = {f.name: getattr(self, f.name) for f in fields(self)}
        kwargs["producer_config"] = dict(self.producer_config)
        kwargs["consumer_config"] = dict(self.consumer_config)
        kwargs["input_serdes"] = dict(self.input_serdes)
        return (_config_from_kwargs, (kwargs,))

    @property
    def transactional_id(self) -> str:
        """``<application_id>-<instance_id>``: stable per instance, so a restart
        fences its previous incarnation. Also the prefix of the client ids."""
        return f"{self.application_id}-{self.instance_id}"

    def resolved_key_serde(self) -> Serde:
        """Return the key serde object (built-ins by name are shared instances)."""
        return resolve_serde(self.key_serde, what="key_serde")

    def resolved_value_serde(self) -> Serde:
        """Return the value serde object (built-ins by name are shared instances)."""
        return resolve_serde(self.value_serde, what="value_serde")

    def check_async(self) -> None:
        """The settings an async processor needs (checked when one is run).

        Raises:
            ConfigError: ``record_timeout_ms`` is not below ``transaction_timeout_ms``
                under exactly_once_v2.
        """
        limit = ASYNC_TRANSACTION_SHARE * self.transaction_timeout_ms
        if (
            self.processing_guarantee == "exactly_once_v2"
            and self.record_timeout_ms + self.commit_interval_ms > limit
        ):
            raise _invalid(
                "record_timeout_ms",
                self.record_timeout_ms,
                f"plus commit_interval_ms ({self.commit_interval_ms}) must be at most "
                f"{ASYNC_TRANSACTION_SHARE:.0%} of transaction_timeout_ms "
                f"({self.transaction_timeout_ms}) for an async processor under "
                "exactly_once_v2: a commit waits for the records in flight, and the broker "
                "aborts a transaction open longer than transaction_timeout_ms",
            )

    def consumer_settings(self) -> dict[str, ClientValue]:
        """Return a fresh librdkafka consumer configuration.

        ``client.id`` (``<transactional_id>-consumer``),
        ``auto.offset.reset`` (``earliest``), ``fetch.queue.backoff.ms``
        (:data:`DEFAULT_FETCH_QUEUE_BACKOFF_MS`) and ``group.instance.id``
        (``<application_id>-<instance_id>``: static membership, so a restarted
        instance takes its partitions back at once instead of waiting for the
        old member's session to time out) are defaults ``consumer_config`` may
        change; ``group.instance.id=""`` turns static membership off. The owned
        keys are always set by eos.
        """
        settings: dict[str, ClientValue] = {
            "client.id": f"{self.transactional_id}-consumer",
            "auto.offset.reset": "earliest",
            "fetch.queue.backoff.ms": DEFAULT_FETCH_QUEUE_BACKOFF_MS,
            "group.instance.id": self.transactional_id,
        }
        settings.update(self.consumer_config)
        if settings.get("group.instance.id") in ("", None):
            del settings["group.instance.id"]
        settings["bootstrap.servers"] = self.bootstrap_servers
        settings["group.id"] = self.application_id
        # The engine stores and commits offsets itself (in the transaction under
        # exactly_once_v2), so nothing may be committed behind its back.
        settings["enable.auto.commit"] = False
        settings["enable.auto.offset.store"] = False
        # Under every guarantee only committed upstream data is processed: an
        # aborted upstream transaction must never produce effects here.
        settings["isolation.level"] = "read_committed"
        return settings

    def producer_settings(self) -> dict[str, ClientValue]:
        """Return a fresh librdkafka producer configuration.

        Every guarantee gets an idempotent producer with ``acks=all``;
        exactly_once_v2 adds ``transactional.id`` and
        ``transaction.timeout.ms``. ``client.id``, ``linger.ms`` and (for
        exactly_once_v2) ``retry.backoff.ms`` are defaults ``producer_config``
        may change. ``acks`` is a default too, so a conflicting user value
        reaches librdkafka, which rejects it, instead of being dropped.
        """
        settings: dict[str, ClientValue] = {
            "client.id": f"{self.transactional_id}-producer",
            "acks": "all",
            "linger.ms": DEFAULT_LINGER_MS,
        }
        eos = self.processing_guarantee == "exactly_once_v2"
        if eos:
            # Back-to-back transactions hit CONCURRENT_TRANSACTIONS retries that
            # wait retry.backoff.ms each (confluent-kafka-python#967, KAFKA-5477).
            settings["retry.backoff.ms"] = DEFAULT_TRANSACTIONAL_RETRY_BACKOFF_MS
        settings.update(self.producer_config)
        settings["bootstrap.servers"] = self.bootstrap_servers
        settings["enable.idempotence"] = True
        if eos:
            settings["transactional.id"] = self.transactional_id
            settings["transaction.timeout.ms"] = self.transaction_timeout_ms
        return settings

    def admin_settings(self) -> dict[str, ClientValue]:
        """Return a fresh librdkafka admin client configuration.

        ``bootstrap.servers`` plus the connection and security settings of
        ``producer_config`` (``security.protocol``, ``client.dns.lookup``,
        ``sasl.*``, ``ssl.*``, ``socket.*``), so the admin client reaches the
        cluster the same way the producer does.
        """
        settings: dict[str, ClientValue] = {
            "bootstrap.servers": self.bootstrap_servers,
            "client.id": f"{self.transactional_id}-admin",
        }
        for key, value in self.producer_config.items():
            if key in _CONNECTION_KEYS or key.startswith(_CONNECTION_PREFIXES):
                settings[key] = value
        return settings

    @classmethod
    def from_mapping(cls, props: Mapping[str, PropertyValue], **overrides: object) -> Config:
        """Build a config from Kafka-style properties.

        eos keys (see :data:`eos.properties.PROPERTY_FIELDS`):
        ``application.id``, ``bootstrap.servers``, ``input.topics``
        (comma-separated), ``processing.guarantee`` (``exactly_once_v2``,
        ``at_least_once``, ``at_most_once``, or the same with ``-``),
        ``instance.id``, ``key.serde``, ``value.serde``,
        ``commit.interval.ms``, ``max.batch.records``,
        ``transaction.timeout.ms``, ``processing.error.policy``,
        ``dead.letter.topic``, ``state.dir``, ``shutdown.timeout.ms``,
        ``bootstrap.timeout.ms``, ``max.aborts.without.progress``,
        ``metrics.port``, ``metrics.bind.address``, ``lineage.headers``
        (``true`` or ``false``), and
        ``input.serdes.<topic>.key``/``input.serdes.<topic>.value`` (a serde
        name for one input topic, see ``input_serdes``). Values are strings as a
        file spells them, or Python values of the field's type
        (``{"commit.interval.ms": 5}``).

        ``producer.X`` sets librdkafka setting ``X`` on the producer and
        ``consumer.X`` on the consumer. Any other key is a librdkafka setting
        for both clients, as Kafka Streams applies unprefixed client settings
        to all its clients; a prefixed setting wins over the unprefixed one.
        Every client setting is checked against the bundled librdkafka
        (offline); a key that is neither an eos key nor a librdkafka setting
        is a ConfigError saying what was probably meant.

        Args:
            props: The properties.
            **overrides: Config field values (Python names) that win over
                ``props``; a mapping override replaces the whole mapping.

        Returns:
            The validated config.

        Raises:
            ConfigError: A key is unknown, required, or its value is invalid.
        """
        kwargs = _read_properties_mapping(props)
        field_names = {f.name for f in fields(cls)}
        for name in overrides:
            if name not in field_names:
                raise ConfigError(
                    f"unknown Config field {name!r} in overrides" + did_you_mean(name, field_names),
                    key=name,
                )
        kwargs.update(overrides)
        for prop in _REQUIRED:
            if PROPERTY_FIELDS[prop] not in kwargs:
                raise ConfigError(f"{prop} is required", key=PROPERTY_FIELDS[prop])
        return cls(**kwargs)

    def with_properties(self, props: Mapping[str, PropertyValue]) -> Config:
        """Return a copy with the settings ``props`` names replaced, one by one.

        ``props`` is read as by :meth:`from_mapping`. Each eos key replaces
        its field; each client setting replaces that one setting of
        ``producer_config``/``consumer_config`` (an unprefixed one on both).
        Whatever ``props`` does not mention keeps its value, serde objects
        included. ``eos run app:APP --config FILE`` applies FILE this way.

        Raises:
            ConfigError: A key is unknown or a value is invalid.
        """
        kwargs = _read_properties_mapping(props)
        for name in ("producer_config", "consumer_config"):
            kwargs[name] = {**getattr(self, name), **kwargs[name]}
        if "input_serdes" in kwargs:
            merged = dict(self.input_serdes)
            for topic, (key_serde, value_serde) in kwargs["input_serdes"].items():
                old_key, old_value = merged.get(topic, (None, None))
                merged[topic] = (key_serde or old_key, value_serde or old_value)
            kwargs["input_serdes"] = merged
        return dataclasses.replace(self, **kwargs)

    @classmethod
    def from_properties(cls, path: str | os.PathLike[str], **overrides: object) -> Config:
        """Read a Java-style ``.properties`` file and build a config from it.

        See :func:`eos.properties.parse_properties` for the syntax and :meth:`from_mapping`
        for the keys.

        Args:
            path: The file, read as UTF-8.
            **overrides: Config field values that win over the file.

        Returns:
            The validated config.

        Raises:
            ConfigError: The file cannot be read, or a setting is invalid.
        """
        return cls.from_mapping(read_properties(path), **overrides)


def _config_from_kwargs(kwargs: dict[str, Any]) -> Config:
    return Config(**kwargs)


def _read_properties_mapping(props: Mapping[str, PropertyValue]) -> dict[str, Any]:
    """Config keyword arguments from Kafka-style properties; see Config.from_mapping."""
    if not isinstance(props, Mapping):
        raise ConfigError(f"properties must be a mapping, not a {type(props).__name__}")
    kwargs: dict[str, Any] = {}
    shared: dict[str, ClientValue] = {}
    prefixed: dict[str, dict[str, ClientValue]] = {"producer": {}, "consumer": {}}
    for raw_key, raw_value in props.items():
        if not isinstance(raw_key, str):
            raise ConfigError(f"property names must be str, not {type(raw_key).__name__}")
        key = raw_key.strip()
        name = PROPERTY_FIELDS.get(key)
        if name is not None:
            kwargs[name] = parse_property_value(key, name, raw_value)
            continue
        if key.startswith(INPUT_SERDES_PREFIX):
            topic, part = parse_input_serde_key(key)
            spec = client_value(key, raw_value)
            serdes = kwargs.setdefault("input_serdes", {})
            old_key, old_value = serdes.get(topic, (None, None))
            serdes[topic] = (spec, old_value) if part == "key" else (old_key, spec)
            continue
        value = client_value(key, raw_value)
        prefix, dot, setting = key.partition(".")
        if dot and prefix in prefixed:
            if not setting:
                raise ConfigError(f"{key!r} names no setting", key=key)
            _reject_owned(setting, f"as {key!r}")
            _check_client_setting(setting, value, f"(as {key!r})", written=key)
            prefixed[prefix][setting] = value
        else:
            _reject_owned(key, "as a client setting")
            _check_client_setting(key, value, "(for producer and consumer)", written=key)
            shared[key] = value
    kwargs["producer_config"] = {**shared, **prefixed["producer"]}
    kwargs["consumer_config"] = {**shared, **prefixed["consumer"]}
    return kwargs
