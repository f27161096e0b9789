"""librdkafka at the edges: offline setting checks, log routing, the start-up check.

Three things that talk to librdkafka before the engine's clients exist:

- :func:`client_setting_problem` asks the bundled librdkafka whether a
  setting name and value are valid, without creating a client (nothing
  connects, nothing logs). :class:`~eos.config.Config` calls it for every
  pass-through setting, so a typo is a ``ConfigError`` at parse time instead
  of a ``KafkaException`` when the engine starts.
- :class:`KafkaLog` routes librdkafka's log lines through Python ``logging``
  (the ``eos.kafka`` logger), one line per distinct message, instead of raw
  ``%3|...|FAIL|`` lines on stderr.
- :func:`check_topics` is the engine's start-up check with the admin client.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from eos._kafka_errors import error_codes
from eos._stop import StopSignal
from eos.config import Config
from eos.errors import ConfigError

__all__ = [
    "LIBRDKAFKA_PROPERTIES",
    "UNKNOWN_SETTING",
    "KafkaLog",
    "check_topics",
    "client_setting_problem",
]

log = logging.getLogger("eos.engine")

_LIBRDKAFKA_NAMES: Final = """
    acks allow.auto.create.topics api.version.fallback.ms api.version.request
    api.version.request.timeout.ms auto.commit.enable auto.commit.interval.ms
    auto.offset.reset batch.num.messages batch.size bootstrap.servers broker.address.family
    broker.address.ttl broker.version.fallback builtin.features check.crcs client.dns.lookup
    client.id client.rack client.software.name client.software.version compression.codec
    compression.level compression.type connections.max.idle.ms consume.callback.max.messages
    coordinator.query.interval.ms debug delivery.report.only.error delivery.timeout.ms
    enable.auto.commit enable.auto.offset.store enable.gapless.guarantee enable.idempotence
    enable.metrics.push enable.partition.eof enable.random.seed
    enable.sasl.oauthbearer.unsecure.jwt enable.sparse.connections
    enable.ssl.certificate.verification enable_sasl_queue enabled_events
    fetch.error.backoff.ms fetch.max.bytes fetch.message.max.bytes fetch.min.bytes
    fetch.queue.backoff.ms fetch.wait.max.ms group.id group.instance.id group.protocol
    group.protocol.type group.remote.assignor heartbeat.interval.ms https.ca.location
    https.ca.pem internal.termination.signal isolation.level linger.ms log.connection.close
    log.queue log.thread.name log_level max.in.flight max.in.flight.requests.per.connection
    max.partition.fetch.bytes max.poll.interval.ms max.poll.records message.copy.max.bytes
    message.max.bytes message.send.max.retries message.timeout.ms metadata.broker.list
    metadata.max.age.ms metadata.recovery.rebootstrap.trigger.ms metadata.recovery.strategy
    metadata.request.timeout.ms offset.store.method offset.store.path
    offset.store.sync.interval.ms partition.assignment.strategy partitioner
    plugin.library.paths produce.offset.report queue.buffering.backpressure.threshold
    queue.buffering.max.kbytes queue.buffering.max.messages queue.buffering.max.ms
    queued.max.messages.kbytes queued.min.messages queuing.strategy
    receive.message.max.bytes reconnect.backoff.jitter.ms reconnect.backoff.max.ms
    reconnect.backoff.ms request.required.acks request.timeout.ms retries
    retry.backoff.max.ms retry.backoff.ms sasl.jaas.config sasl.kerberos.keytab
    sasl.kerberos.kinit.cmd sasl.kerberos.min.time.before.relogin sasl.kerberos.principal
    sasl.kerberos.service.name sasl.mechanism sasl.mechanisms
    sasl.oauthbearer.assertion.algorithm sasl.oauthbearer.assertion.claim.aud
    sasl.oauthbearer.assertion.claim.exp.seconds sasl.oauthbearer.assertion.claim.iss
    sasl.oauthbearer.assertion.claim.jti.include
    sasl.oauthbearer.assertion.claim.nbf.seconds sasl.oauthbearer.assertion.claim.sub
    sasl.oauthbearer.assertion.file sasl.oauthbearer.assertion.jwt.template.file
    sasl.oauthbearer.assertion.private.key.file
    sasl.oauthbearer.assertion.private.key.passphrase
    sasl.oauthbearer.assertion.private.key.pem sasl.oauthbearer.client.credentials.client.id
    sasl.oauthbearer.client.credentials.client.secret sasl.oauthbearer.client.id
    sasl.oauthbearer.client.secret sasl.oauthbearer.config sasl.oauthbearer.extensions
    sasl.oauthbearer.grant.type sasl.oauthbearer.metadata.authentication.type
    sasl.oauthbearer.method sasl.oauthbearer.scope sasl.oauthbearer.sub.claim.name
    sasl.oauthbearer.token.endpoint.url sasl.password sasl.username security.protocol
    session.timeout.ms share.acknowledgement.mode socket.blocking.max.ms
    socket.connection.setup.timeout.ms socket.keepalive.enable socket.max.fails
    socket.nagle.disable socket.receive.buffer.bytes socket.send.buffer.bytes
    socket.timeout.ms ssl.ca.location ssl.ca.pem ssl.certificate.location
    ssl.certificate.pem ssl.cipher.suites ssl.crl.location ssl.curves.list
    ssl.endpoint.identification.algorithm ssl.engine.id ssl.engine.location ssl.key.location
    ssl.key.password ssl.key.pem ssl.keystore.location ssl.keystore.password ssl.providers
    ssl.sigalgs.list ssl.truststore.location statistics.interval.ms
    sticky.partitioning.linger.ms test.mock.broker.rtt test.mock.num.brokers topic.blacklist
    topic.metadata.propagation.max.ms topic.metadata.refresh.fast.cnt
    topic.metadata.refresh.fast.interval.ms topic.metadata.refresh.interval.ms
    topic.metadata.refresh.sparse transaction.timeout.ms transactional.id
"""
LIBRDKAFKA_PROPERTIES: Final = frozenset(_LIBRDKAFKA_NAMES.split())
"""librdkafka 2.16 setting names (global and topic level, aliases included)
that can be set from a properties file. Used for "did you mean" suggestions
only: whether a setting exists is asked of the bundled librdkafka itself, so a
newer librdkafka's settings are accepted too."""

UNKNOWN_SETTING: Final = "unknown"
"""What :func:`client_setting_problem` returns for a name librdkafka does not know."""

_SENTINEL: Final = "eos.offline.check"
# Loading plugins is a side effect (dlopen) no check may have.
_UNCHECKED: Final = frozenset({"plugin.library.paths"})
# Consumer-only keys of the Python client; the check builds a producer configuration.
_CONSUMER_ONLY: Final = frozenset({"on_commit"})

_ADMIN_STEP_S = 2.0
_ADMIN_TIMEOUT_S = 30.0
_REFUSED = error_codes("_AUTHENTICATION", "SASL_AUTHENTICATION_FAILED", "_SSL")


def client_setting_problem(key: str, value: object) -> str | None:
    """Ask the bundled librdkafka whether one client setting is valid.

    Builds a producer configuration holding the setting followed by a
    setting that does not exist. confluent-kafka applies settings in order and
    stops at the first bad one before any client exists, so an error naming
    the sentinel means the setting itself was accepted. No client is created:
    nothing connects, nothing is logged, and a call takes microseconds.

    Args:
        key: A librdkafka (or confluent-kafka) setting name.
        value: Its value.

    Returns:
        None if librdkafka accepts the setting, :data:`UNKNOWN_SETTING` if it
        has no setting of that name, else librdkafka's complaint about the
        value (it may quote the value: never show it for a secret setting).
    """
    if key in _UNCHECKED or key in _CONSUMER_ONLY:
        return None
    try:
        Producer({key: value, _SENTINEL: "1"})
    except KafkaException as exc:
        error = exc.args[0] if exc.args else None
        text = error.str() if isinstance(error, KafkaError) else str(exc)
        if f'"{_SENTINEL}"' in text:
            return None
        return UNKNOWN_SETTING if "No such configuration property" in text else text
    except (TypeError, ValueError) as exc:  # the Python client's own type checks
        return str(exc)
    return None  # unreachable: the sentinel always fails  # pragma: no cover


# Parts of a librdkafka log line that change between repeats of the same event.
_VARYING: Final = re.compile(
    r"\[thrd:[^\]]*\]: |\s*\(after \d+ms[^)]*\)|,? ?\d+ identical error\(s\) suppressed"
)
_MAX_REMEMBERED: Final = 1000
REPEAT_WINDOW_S: Final = 60.0
"""A librdkafka line repeated within this many seconds is logged at DEBUG only."""


class KafkaLog:
    """The ``logger`` of eos's librdkafka clients: their log lines through ``logging``.

    confluent-kafka calls :meth:`log` (from the client's ``poll``, ``consume``
    or ``flush``) instead of writing ``%3|...|FAIL|...`` lines to stderr. A
    broker that cannot be reached repeats the same line at every reconnect;
    this logs a distinct line at its level (at most WARNING: librdkafka retries
    these itself, and eos raises when it gives up) and its repeats within
    :data:`REPEAT_WINDOW_S` at DEBUG, so an outage is one line a minute per
    broker, not hundreds, and the same outage next week is seen again.

    Thread-safe; one instance may serve several clients.

    Args:
        logger: Where the lines go; ``eos.kafka`` by default.
        clock: Monotonic seconds (tests pass their own).
    """

    def __init__(
        self, logger: logging.Logger | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.logger = logger or logging.getLogger("eos.kafka")
        self._clock = clock
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def log(self, level: int, msg: str, *args: object, **_kwargs: object) -> None:
        """Log one librdkafka line (confluent-kafka's ``logger.log`` call)."""
        text = msg % args if args else msg
        distinct = _VARYING.sub("", text)
        now = self._clock()
        with self._lock:
            last = self._last.get(distinct)
            repeat = last is not None and now - last < REPEAT_WINDOW_S
            if not repeat:
                if len(self._last) >= _MAX_REMEMBERED:
                    self._last.clear()
                self._last[distinct] = now
        self.logger.log(logging.DEBUG if repeat else min(level, logging.WARNING), "%s", text)


def _key(error: KafkaError) -> str:
    return "ssl" if error.code() == getattr(KafkaError, "_SSL", None) else "sasl.password"


def _refused_message(
    config: Config, settings: dict[str, str | int | float | bool], error: KafkaError
) -> str:
    """Names the user and the listener, never the password."""
    user = settings.get("sasl.username")
    who = f" as user {user!r}" if user else ""
    fix = (
        "check ssl.ca.location and the broker's certificate"
        if _key(error) == "ssl"
        else "check sasl.username, sasl.password and sasl.mechanism"
    )
    return f"Kafka at {config.bootstrap_servers} refused the connection{who}: {error.str()}; {fix}"


def _unreachable_message(config: Config, timeout_s: float, detail: str) -> str:
    return (
        f"cannot reach Kafka at {config.bootstrap_servers} within {timeout_s:g} s "
        f"(bootstrap_timeout_ms): {detail}. Is Kafka running and listening there? "
        "For a local development broker run `eos dev-kafka up`; to wait longer for "
        "a broker that is starting, raise bootstrap_timeout_ms (bootstrap.timeout.ms)"
    )


def check_topics(
    config: Config, stop: StopSignal, internal: Mapping[str, int | None] | None = None
) -> AdminClient:
    """Check the input topics exist; create the dead-letter topic and the internal topics.

    ``internal`` are the topology's repartition topics (input topics of the
    application that eos writes itself) with their partition count (None: the
    other input topics' count); those missing are created.

    Retries an unreachable cluster for up to ``config.bootstrap_timeout_ms``
    (a stop request ends the wait); an authentication or TLS failure ends it
    at once. librdkafka's log lines go to the ``eos.kafka`` logger through
    :class:`KafkaLog`. Returns the admin client for the engine's other parts.

    Raises:
        ConfigError: Kafka is unreachable (the message says where, for how
            long, and what to check), refused the credentials, an input topic
            is missing or the dead-letter topic cannot be created.
        StopRequested: A stop was requested meanwhile.
    """
    refused: list[KafkaError] = []
    failures: list[KafkaError] = []
    waiting = [True]  # the client outlives this check; its later errors are only logged

    def on_error(error: KafkaError) -> None:
        if waiting[0]:
            (refused if error.code() in _REFUSED else failures).append(error)

    settings = config.admin_settings()
    admin = AdminClient(
        {**settings, "error_cb": on_error, "logger": KafkaLog()}  # type: ignore[dict-item]
    )
    timeout_s = config.bootstrap_timeout_ms / 1000
    deadline = time.monotonic() + timeout_s
    while True:
        step = max(0.1, min(_ADMIN_STEP_S, deadline - time.monotonic()))
        try:
            metadata = admin.list_topics(timeout=step)
            waiting[0] = False
            break
        except KafkaException as exc:
            admin.poll(0)  # serve error_cb and the log lines
            if refused:
                raise ConfigError(
                    _refused_message(config, settings, refused[0]), _key(refused[0])
                ) from exc
            stop.check()
            if time.monotonic() >= deadline:
                detail = failures[-1].str() if failures else str(exc)
                raise ConfigError(
                    _unreachable_message(config, timeout_s, detail), "bootstrap.servers"
                ) from exc
    if internal:
        _create_internal(admin, config, metadata, internal)
    own = internal or {}
    missing = [t for t in config.input_topics if t not in metadata.topics and t not in own]
    if missing:
        raise ConfigError(
            f"input topic(s) {', '.join(missing)} do not exist on "
            f"{config.bootstrap_servers}; create them first",
            "input.topics",
        )
    dlq = config.dead_letter_topic
    if dlq is not None and dlq not in metadata.topics:
        futures = admin.create_topics([NewTopic(dlq, num_partitions=1)])
        for future in futures.values():
            try:
                future.result(_ADMIN_TIMEOUT_S)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise ConfigError(
                        f"cannot create dead-letter topic {dlq!r}: {exc}", "dead.letter.topic"
                    ) from exc
        log.info("created dead-letter topic %s", dlq)
    return admin


def _create_internal(
    admin: AdminClient, config: Config, metadata: Any, internal: Mapping[str, int | None]
) -> None:
    """Create the repartition topics that do not exist yet (another instance may race us)."""
    sources = [t for t in config.input_topics if t not in internal and t in metadata.topics]
    counts = {len(metadata.topics[t].partitions) for t in sources}
    default = max(counts) if counts else 1
    replication = min(3, max(1, len(metadata.brokers)))
    # Kept until consumed, however long the application is down: the engine deletes
    # what it committed (Kafka Streams does the same for its repartition topics).
    settings = {"retention.ms": "-1", "cleanup.policy": "delete", "segment.bytes": "52428800"}
    new = [
        NewTopic(
            topic,
            num_partitions=partitions or default,
            replication_factor=replication,
            config=settings,
        )
        for topic, partitions in internal.items()
        if topic not in metadata.topics
    ]
    if not new:
        return
    for topic, future in admin.create_topics(new, operation_timeout=_ADMIN_TIMEOUT_S).items():
        try:
            future.result(_ADMIN_TIMEOUT_S)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise ConfigError(
                    f"cannot create repartition topic {topic!r}: {exc}", "input.topics"
                ) from exc
            continue
        log.info("created repartition topic %s", topic)
    # The other parts read the metadata next: wait until it shows every new topic.
    names = [t.topic for t in new]
    deadline = time.monotonic() + _ADMIN_TIMEOUT_S
    while True:
        topics = admin.list_topics(timeout=_ADMIN_TIMEOUT_S).topics
        if all(n in topics and topics[n].partitions for n in names):
            return
        if time.monotonic() >= deadline:
            raise ConfigError(
                f"repartition topic(s) {', '.join(names)} were created but the cluster's "
                f"metadata does not show them after {_ADMIN_TIMEOUT_S:.0f}s",
                "input.topics",
            )
        time.sleep(0.1)  # metadata propagation has no event to wait on
