"""Which failures blame a record, which are outages, which stop the instance; the abort budget;
the batch's rewind targets. Pure logic over real KafkaError objects, no broker."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError

from eos._backoff import BACKOFF_CAP_S, AbortBudget
from eos._batch import Assignment, Batch, Poison
from eos._kafka_errors import Cause, cause_of
from eos._outputs import Outputs
from eos._stop import StopSignal
from eos.errors import AbortLimitError


@pytest.mark.parametrize(
    ("code", "cause"),
    [
        (KafkaError.MSG_SIZE_TOO_LARGE, Cause.RECORD),
        (KafkaError.RECORD_LIST_TOO_LARGE, Cause.RECORD),
        (KafkaError.INVALID_RECORD, Cause.RECORD),
        (KafkaError.INVALID_MSG, Cause.RECORD),
        (KafkaError._BAD_MSG, Cause.RECORD),
        (KafkaError._INVALID_ARG, Cause.RECORD),
        (KafkaError._MSG_TIMED_OUT, Cause.OUTAGE),
        (KafkaError.NOT_ENOUGH_REPLICAS, Cause.OUTAGE),
        (KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND, Cause.OUTAGE),
        (KafkaError.LEADER_NOT_AVAILABLE, Cause.OUTAGE),
        (KafkaError.NOT_LEADER_FOR_PARTITION, Cause.OUTAGE),
        (KafkaError._TRANSPORT, Cause.OUTAGE),
        (KafkaError._TIMED_OUT, Cause.OUTAGE),
        (KafkaError.CONCURRENT_TRANSACTIONS, Cause.OUTAGE),
        (KafkaError.UNKNOWN_TOPIC_OR_PART, Cause.CONFIG),
        (KafkaError._UNKNOWN_TOPIC, Cause.CONFIG),
        (KafkaError._UNKNOWN_PARTITION, Cause.CONFIG),
        (KafkaError.TOPIC_AUTHORIZATION_FAILED, Cause.CONFIG),
        (KafkaError.GROUP_AUTHORIZATION_FAILED, Cause.CONFIG),
        (KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, Cause.CONFIG),
        (KafkaError.ILLEGAL_GENERATION, Cause.REBALANCE),
        (KafkaError.UNKNOWN_MEMBER_ID, Cause.REBALANCE),
        (KafkaError.FENCED_INSTANCE_ID, Cause.REBALANCE),
        (KafkaError._FENCED, Cause.FENCED),
        (KafkaError.PRODUCER_FENCED, Cause.FENCED),
        (KafkaError._PURGE_QUEUE, Cause.COLLATERAL),
        (KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER, Cause.COLLATERAL),
        (KafkaError._INCONSISTENT, Cause.COLLATERAL),
        (KafkaError._STATE, Cause.COLLATERAL),
    ],
)
def test_cause_of(code: int, cause: Cause) -> None:
    """Only record-specific errors are RECORD; timeouts and unavailability are OUTAGE;
    missing topics and denied ACLs are CONFIG."""
    assert cause_of(KafkaError(code)) is cause


def test_an_unlisted_retriable_error_is_an_outage_and_an_unlisted_other_is_unknown() -> None:
    """Anything librdkafka calls retriable is treated as an outage, never as poison."""
    assert cause_of(KafkaError(KafkaError.POLICY_VIOLATION, retriable=True)) is Cause.OUTAGE
    assert cause_of(KafkaError(KafkaError.POLICY_VIOLATION)) is Cause.UNKNOWN


class _Msg:
    def __init__(self, topic: str) -> None:
        self._topic = topic

    def topic(self) -> str:
        return self._topic


class _Producer:
    def poll(self, timeout: float = 0.0) -> int:
        return 0


class _Guarantee:
    producer = _Producer()
    failures: list[KafkaError] = []

    def delivery_failed(self, error: KafkaError) -> None:
        self.failures.append(error)


def _outputs() -> Outputs:
    return Outputs(
        _Guarantee(),  # type: ignore[arg-type]
        dead_letter_topic="dlq",
        application_id="app",
        flush_timeout_s=1.0,
    )


def _report(outputs: Outputs, offset: int, code: int, topic: str = "out") -> None:
    outputs._on_careful_delivery(("in", 0, offset), KafkaError(code), _Msg(topic))


def test_timed_out_outputs_in_a_careful_replay_are_an_outage_not_poison() -> None:
    """Every output of a careful replay timing out (_MSG_TIMED_OUT, the shape of an outage
    that outlasts the replay) blames no record: the diagnosis is OUTAGE."""
    outputs = _outputs()
    for offset in range(5):
        _report(outputs, offset, KafkaError._MSG_TIMED_OUT)
    diagnosis = outputs.diagnose(KafkaError(KafkaError._INCONSISTENT))
    assert diagnosis.cause is Cause.OUTAGE
    assert diagnosis.blamed == {} and diagnosis.undeliverable == {}


def test_a_rejected_output_blames_exactly_its_record() -> None:
    outputs = _outputs()
    _report(outputs, 7, KafkaError.MSG_SIZE_TOO_LARGE)
    _report(outputs, 8, KafkaError._PURGE_INFLIGHT)  # collateral of the rejection
    diagnosis = outputs.diagnose(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
    assert diagnosis.cause is Cause.RECORD
    assert list(diagnosis.blamed) == [("in", 0, 7)]


def test_several_records_rejected_together_switch_to_one_record_per_request() -> None:
    """librdkafka fails every record of a rejected request: no blame yet, replay one by one."""
    outputs = _outputs()
    for offset in range(3):
        _report(outputs, offset, KafkaError.RECORD_LIST_TOO_LARGE)
    diagnosis = outputs.diagnose(None)
    assert diagnosis.cause is Cause.RECORD and diagnosis.blamed == {}
    assert outputs.one_by_one
    outputs.clear()
    for offset in range(2):
        _report(outputs, offset, KafkaError.MSG_SIZE_TOO_LARGE)
    assert len(outputs.diagnose(None).blamed) == 2  # one by one, each blame is exact


def test_a_rejected_dead_letter_copy_makes_its_record_undeliverable() -> None:
    outputs = _outputs()
    _report(outputs, 3, KafkaError.MSG_SIZE_TOO_LARGE, topic="dlq")
    diagnosis = outputs.diagnose(None)
    assert diagnosis.blamed == {} and list(diagnosis.undeliverable) == [("in", 0, 3)]


def test_configuration_errors_win_over_everything_and_name_the_topic() -> None:
    outputs = _outputs()
    _report(outputs, 1, KafkaError._MSG_TIMED_OUT)
    _report(outputs, 2, KafkaError.MSG_SIZE_TOO_LARGE)
    _report(outputs, 3, KafkaError._UNKNOWN_TOPIC, topic="missing")
    diagnosis = outputs.diagnose(None)
    assert diagnosis.cause is Cause.CONFIG and diagnosis.topic == "missing"


def test_nothing_reported_is_unknown() -> None:
    """_INCONSISTENT alone ("N messages failed delivery") says nothing: find out by replaying."""
    assert _outputs().diagnose(KafkaError(KafkaError._INCONSISTENT)).cause is Cause.UNKNOWN
    assert _outputs().diagnose(None).cause is Cause.UNKNOWN


def test_failed_careful_deliveries_reach_the_guarantee() -> None:
    """Without transactions a per-message callback bypasses the producer's: the guarantee must
    still hear of the failure so the offset commit does not go ahead."""
    outputs = _outputs()
    guarantee = outputs.guarantee
    before = len(guarantee.failures)  # type: ignore[attr-defined]
    _report(outputs, 1, KafkaError.MSG_SIZE_TOO_LARGE)
    outputs.on_failed_delivery(KafkaError(KafkaError._MSG_TIMED_OUT), _Msg("changelog"))
    assert len(guarantee.failures) == before + 2  # type: ignore[attr-defined]


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_abort_budget_backs_off_exponentially_and_stops_at_the_limit() -> None:
    clock = _Clock()
    budget = AbortBudget(4, StopSignal(1.0), clock=clock)
    delays = []
    for _ in range(3):
        budget.aborted("commit_failed: boom", counted=True)
        delays.append(round(budget.until - clock.now, 3))
    assert delays == [0.1, 0.2, 0.4]
    with pytest.raises(AbortLimitError, match="4 times in a row") as error:
        budget.aborted("commit_failed: boom", counted=True)
    assert error.value.cause == "commit_failed: boom"


def test_outages_back_off_to_the_cap_but_never_reach_the_limit() -> None:
    clock = _Clock()
    budget = AbortBudget(2, StopSignal(1.0), clock=clock)
    for _ in range(50):
        budget.aborted("outage", counted=False)
    assert budget.until - clock.now == BACKOFF_CAP_S
    budget.progress()
    assert budget.consecutive == 0 and budget.delay() == 0.0


def test_progress_starts_the_count_over() -> None:
    budget = AbortBudget(2, StopSignal(1.0), clock=_Clock())
    budget.aborted("x", counted=True)
    budget.progress()
    budget.aborted("x", counted=True)  # one again, not two


def test_rewind_targets_cover_the_batch_and_unprocessed_messages() -> None:
    """Each partition goes back to the first offset the batch read; partitions only in the
    unprocessed rest of the poll go back to their first unprocessed offset."""

    class M:
        def __init__(self, p: int, o: int) -> None:
            self.p, self.o = p, o

        def error(self) -> None:
            return None

        def topic(self) -> str:
            return "t"

        def partition(self) -> int:
            return self.p

        def offset(self) -> int:
            return self.o

    batch = Batch()
    batch.first_seen.update({("t", 0): 10, ("t", 1): 20})
    batch.positions.update({("t", 0): 15, ("t", 1): 25})
    targets = batch.rewind_targets([M(1, 25), M(2, 7), M(2, 8)])
    assert targets == {("t", 0): 10, ("t", 1): 20, ("t", 2): 7}


def test_poison_and_partition_state_are_dropped_with_revoked_partitions() -> None:
    poison = Poison()
    poison.mark(("t", 0, 5), ValueError())
    poison.mark(("t", 1, 9), ValueError())
    poison.committed({("t", 0): 6})
    assert list(poison.records) == [("t", 1, 9)]
    poison.drop([("t", 1)])
    assert not poison
    assignment = Assignment()
    assignment.assigned.update({("t", 0), ("t", 1)})
    assignment.restoring.add(("t", 1))
    assignment.held_back(("t", 1), 40)
    assignment.held_back(("t", 1), 41)
    assert assignment.skipped == {("t", 1): 40} and not assignment.ready(("t", 1))
    assignment.drop([("t", 1)])
    assert assignment.skipped == {} and assignment.restoring == set()
