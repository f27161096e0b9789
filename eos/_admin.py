"""The engine's start-up checks with the admin client."""

from __future__ import annotations

import logging
import time

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from eos._stop import StopSignal
from eos.config import Config
from eos.errors import ConfigError

__all__ = ["check_topics"]

log = logging.getLogger("eos.engine")

_ADMIN_STEP_S = 2.0
_ADMIN_TIMEOUT_S = 30.0
_REFUSED = frozenset(
    code
    for code in (
        getattr(KafkaError, "_AUTHENTICATION", None),
        getattr(KafkaError, "SASL_AUTHENTICATION_FAILED", None),
        getattr(KafkaError, "_SSL", None),
    )
    if code is not None
)


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


def check_topics(config: Config, stop: StopSignal) -> AdminClient:
    """Check the input topics exist; create the dead-letter topic if missing.

    Retries an unreachable cluster for up to 30 s (a stop request ends the
    wait). Returns the admin client for the engine's other parts.

    Raises:
        ConfigError: Kafka is unreachable, or an input topic is missing or the
            dead-letter topic cannot be created.
        StopRequested: A stop was requested meanwhile.
    """
    refused: list[KafkaError] = []

    def on_error(error: KafkaError) -> None:
        if error.code() in _REFUSED:
            refused.append(error)

    settings = config.admin_settings()
    admin = AdminClient({**settings, "error_cb": on_error})  # type: ignore[dict-item]
    deadline = time.monotonic() + _ADMIN_TIMEOUT_S
    while True:
        try:
            metadata = admin.list_topics(timeout=_ADMIN_STEP_S)
            break
        except KafkaException as exc:
            admin.poll(0)  # serve error_cb: an authentication failure is not worth waiting for
            if refused:
                raise ConfigError(
                    _refused_message(config, settings, refused[0]), _key(refused[0])
                ) from exc
            stop.check()
            if time.monotonic() >= deadline:
                raise ConfigError(
                    f"cannot reach Kafka at {config.bootstrap_servers}: {exc}",
                    "bootstrap.servers",
                ) from exc
    missing = [t for t in config.input_topics if t not in metadata.topics]
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
