"""What a failed Kafka delivery or call says about its cause.

The engine decides what to do with a failure from its cause, never from the
call that happened to report it:

============  ==============================================  ===========================
cause         examples                                        what the engine does
============  ==============================================  ===========================
RECORD        MSG_SIZE_TOO_LARGE, RECORD_LIST_TOO_LARGE,      blame the input record whose
              INVALID_RECORD, CORRUPT_MESSAGE, _BAD_MSG,      output it was; the
              _INVALID_ARG                                    processing_error_policy
                                                              applies to that record
OUTAGE        _MSG_TIMED_OUT, NOT_ENOUGH_REPLICAS, leader     abort, back off, retry; never
              changes, _TRANSPORT, timeouts, anything         a reason to skip or
              retriable                                       dead-letter a record
CONFIG        UNKNOWN_TOPIC_OR_PART, _UNKNOWN_TOPIC,          abort and stop with an error
              _UNKNOWN_PARTITION, *_AUTHORIZATION_FAILED      naming the topic and the
                                                              operation
REBALANCE     ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID,          abort and rewind: the group
              FENCED_INSTANCE_ID, REBALANCE_IN_PROGRESS       moved on (KIP-447 zombie)
FENCED        _FENCED, PRODUCER_FENCED, INVALID_PRODUCER_     the producer is dead
              EPOCH
COLLATERAL    _PURGE_QUEUE, _PURGE_INFLIGHT, OUT_OF_ORDER_    a consequence of another
              SEQUENCE_NUMBER, _INCONSISTENT, _STATE          failure: look for that one
UNKNOWN       anything else                                   abort; counts towards the
                                                              abort limit
============  ==============================================  ===========================
"""

from __future__ import annotations

import enum

from confluent_kafka import KafkaError

__all__ = ["Cause", "cause_of", "error_codes", "error_name"]


class Cause(enum.Enum):
    """Why a delivery or a call failed; see the module docstring."""

    RECORD = "record"
    OUTAGE = "outage"
    CONFIG = "config"
    REBALANCE = "rebalance"
    FENCED = "fenced"
    COLLATERAL = "collateral"
    UNKNOWN = "unknown"


def error_codes(*names: str) -> frozenset[int]:
    """The codes of the ``KafkaError`` names this confluent-kafka knows (others are skipped)."""
    return frozenset(getattr(KafkaError, n) for n in names if hasattr(KafkaError, n))


_RECORD = error_codes(
    "MSG_SIZE_TOO_LARGE",
    "RECORD_LIST_TOO_LARGE",
    "INVALID_RECORD",
    "INVALID_MSG",  # CORRUPT_MESSAGE in the Java client
    "INVALID_TIMESTAMP",
    "_BAD_MSG",
    "_INVALID_ARG",
    "_KEY_SERIALIZATION",
    "_VALUE_SERIALIZATION",
)
_CONFIG = error_codes(
    "UNKNOWN_TOPIC_OR_PART",
    "_UNKNOWN_TOPIC",
    "_UNKNOWN_PARTITION",
    "TOPIC_AUTHORIZATION_FAILED",
    "GROUP_AUTHORIZATION_FAILED",
    "CLUSTER_AUTHORIZATION_FAILED",
    "TRANSACTIONAL_ID_AUTHORIZATION_FAILED",
    "INVALID_REQUIRED_ACKS",
    "SASL_AUTHENTICATION_FAILED",
    "_AUTHENTICATION",
)
_REBALANCE = error_codes(
    "ILLEGAL_GENERATION", "UNKNOWN_MEMBER_ID", "FENCED_INSTANCE_ID", "REBALANCE_IN_PROGRESS"
)
_FENCED = error_codes("_FENCED", "PRODUCER_FENCED", "INVALID_PRODUCER_EPOCH")
_COLLATERAL = error_codes(
    "_PURGE_QUEUE",
    "_PURGE_INFLIGHT",
    "OUT_OF_ORDER_SEQUENCE_NUMBER",
    "UNKNOWN_PRODUCER_ID",
    "_INCONSISTENT",
    "_STATE",
    "_FATAL",
)
_OUTAGE = error_codes(
    "_MSG_TIMED_OUT",
    "_TIMED_OUT",
    "_TIMED_OUT_QUEUE",
    "_TRANSPORT",
    "_ALL_BROKERS_DOWN",
    "_WAIT_COORD",
    "NOT_ENOUGH_REPLICAS",
    "NOT_ENOUGH_REPLICAS_AFTER_APPEND",
    "LEADER_NOT_AVAILABLE",
    "NOT_LEADER_FOR_PARTITION",
    "FENCED_LEADER_EPOCH",
    "UNKNOWN_LEADER_EPOCH",
    "OFFSET_NOT_AVAILABLE",
    "REQUEST_TIMED_OUT",
    "NETWORK_EXCEPTION",
    "COORDINATOR_NOT_AVAILABLE",
    "COORDINATOR_LOAD_IN_PROGRESS",
    "NOT_COORDINATOR",
    "KAFKA_STORAGE_ERROR",
    "CONCURRENT_TRANSACTIONS",
    "BROKER_NOT_AVAILABLE",
    "REPLICA_NOT_AVAILABLE",
    "UNSTABLE_OFFSET_COMMIT",
    "TRANSACTION_ABORTABLE",
    "_MAX_POLL_EXCEEDED",
)


def cause_of(error: KafkaError) -> Cause:
    """Classify ``error`` by its code (and, for unlisted codes, its retriable flag)."""
    code = error.code()
    if code in _RECORD:
        return Cause.RECORD
    if code in _FENCED:
        return Cause.FENCED
    if code in _CONFIG:
        return Cause.CONFIG
    if code in _REBALANCE:
        return Cause.REBALANCE
    if code in _COLLATERAL:
        return Cause.COLLATERAL
    if code in _OUTAGE or error.retriable():
        return Cause.OUTAGE
    return Cause.UNKNOWN


def error_name(error: object) -> str:
    """``NAME: description`` of a KafkaError (or ``str()`` of anything else)."""
    if isinstance(error, KafkaError):
        return f"{error.name()}: {error.str()}"
    return str(error)
