"""A BatchProcessor's records, a run of one partition at a time (eos.batching).

:class:`BatchRuns` is the engine's loop for an :class:`~eos.batching.BatchProcessor`
and the owner of its one failure path: a ``process_batch`` that raises. The engine
hands it a polled batch when nothing needs the records one at a time (see
``Engine._process``); it hands records back to the engine's per-record loop
(``one_at_a_time``) where one must be seen alone. State: ``_singly``, the
partitions to be replayed one record at a time, up to an offset, after a failed
batch was aborted; an entry goes when a record past it arrives.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from eos._batch import TP, Assignment, Batch, redelivered
from eos._committer import Committer, Rewound
from eos._guarantee import Guarantee
from eos._outputs import Outputs
from eos._records import RecordFailures, decode_error
from eos.batching import BatchProcessor, RecordBatch
from eos.errors import ConfigError, StateError
from eos.processor import Context
from eos.stats import EngineStats

__all__ = ["BatchRuns"]

Decode = Callable[[bytes | None], object] | None


class BatchRuns:
    """Runs ``processor.process_batch`` once per run of one partition's records.

    Args:
        processor: The batch processor.
        decoders: The engine's key and value decoders and its per-topic ones.
        batch: The open batch (positions, counts).
        assignment: The instance's assignment (committed positions, held back).
        guarantee: The processing guarantee (only ones that rewind get here).
        outputs: The produce paths (the batch's produce function).
        committer: Aborts a failed batch.
        records: Applies the processing-error policy to an undecodable record.
        stats: Counts the processed records.
        admit: The engine's admission of a partition's first record in a poll.
        consumer_error: The engine's handling of a consumer error event.
        one_at_a_time: The engine's per-record loop.
    """

    def __init__(
        self,
        processor: BatchProcessor,
        *,
        decoders: tuple[Decode, Decode, dict[str, tuple[Decode, Decode]]],
        batch: Batch,
        assignment: Assignment,
        guarantee: Guarantee,
        outputs: Outputs,
        committer: Committer,
        records: RecordFailures,
        stats: EngineStats,
        admit: Callable[[TP, int], bool],
        consumer_error: Callable[[Any, Any], None],
        one_at_a_time: Callable[[Sequence[Any]], None],
    ) -> None:
        self.processor = processor
        self.decoders = decoders
        self.batch = batch
        self.assignment = assignment
        self.guarantee = guarantee
        self.outputs = outputs
        self.committer = committer
        self.records = records
        self.stats = stats
        self.admit = admit
        self.consumer_error = consumer_error
        self.one_at_a_time = one_at_a_time
        # Partitions replayed one record at a time up to this offset: a batch of
        # theirs failed with output in the aborted transaction (_failed).
        self._singly: dict[TP, int] = {}

    def process(self, messages: Sequence[Any], ctx: Context | None) -> None:
        """Process ``messages``: one ``process_batch`` per run of one partition.

        The engine's per-partition checks (admission, the redelivery floor) and
        per-record ones (consumer errors, decoding) as in its per-record loop;
        each of them ends the run so far. Records of a partition to be replayed
        one at a time (``_singly``) go to ``one_at_a_time`` alone.

        Raises:
            Rewound: The batch was aborted and rewound.
        """
        if ctx is None:
            raise RuntimeError("engine not started")
        process_batch = self.processor.process_batch
        kdes, vdes, topic_des = self.decoders
        default_des = (kdes, vdes)
        batch = self.batch
        positions = batch.positions
        committed = self.assignment.committed
        singly = self._singly
        ctx._produce = self.outputs.produce_for_batch()
        batch.starting(ctx.sends, self.guarantee.in_transaction)
        admitted: dict[TP, bool] = {}
        processed = 0
        run_tp: TP = ("", -1)
        run_start = 0  # index in messages of the run's first message
        run_keys: list[Any] = []
        run_values: list[Any] = []
        run_messages: list[Any] = []
        floor = -1
        after = -1  # the offset after the run's last record taken: only ever goes up
        ok = False
        mark = -1

        def run_batch() -> None:
            """process_batch over the run so far; its position on success."""
            nonlocal run_keys, run_values, run_messages, processed
            records = RecordBatch(run_tp[0], run_tp[1], run_keys, run_values, run_messages)
            before = ctx.sends
            ctx._partition = run_tp[1]
            try:
                process_batch(records, ctx)
            except BaseException as exc:
                ctx._partition = None
                # Returns once the records were processed one at a time (and counted).
                self._failed(run_tp, run_messages, exc, ctx.sends != before, messages[run_start:])
            else:
                ctx._partition = None
                positions[run_tp] = run_messages[-1].offset() + 1
                processed += len(run_messages)
            run_keys = []
            run_values = []
            run_messages = []

        for index, msg in enumerate(messages):
            error = msg.error()
            if error is not None:
                if run_messages:
                    run_batch()
                self.consumer_error(msg, error)
                continue
            topic = msg.topic()
            partition = msg.partition()
            offset = msg.offset()
            if partition != run_tp[1] or topic != run_tp[0]:
                if run_messages:
                    run_batch()
                run_tp = (topic, partition)
                if topic_des:
                    kdes, vdes = topic_des.get(topic, default_des)
                after = floor = max(positions.get(run_tp, -1), committed.get(run_tp, -1))
                if offset < floor:
                    redelivered(run_tp, offset, floor)
                ok = admitted.get(run_tp)  # type: ignore[assignment]
                if ok is None:
                    ok = admitted[run_tp] = self.admit(run_tp, max(offset, floor))
                mark = singly.get(run_tp, -1)
            if not ok:
                self.assignment.held_back(run_tp, offset)
                continue
            if offset < after:
                if offset >= floor:
                    # Handed out again inside the run (a fetch reset of librdkafka's own).
                    redelivered(run_tp, offset, after)
                    floor = after
                continue
            after = offset + 1
            if offset <= mark:
                # Replayed after a batch failed with output in the transaction: alone.
                if run_messages:
                    run_batch()
                self.one_at_a_time([msg])
                continue
            if mark >= 0:
                del singly[run_tp]
                mark = -1
            raw_key = msg.key()
            raw_value = msg.value()
            try:
                key = raw_key if kdes is None else kdes(raw_key)
                value = raw_value if vdes is None else vdes(raw_value)
            except Exception as exc:
                if run_messages:
                    run_batch()
                self.records.apply_policy(
                    msg, decode_error(exc, raw_key, kdes, topic), messages[index:]
                )
                positions[run_tp] = offset + 1
                processed += 1
                continue
            if not run_messages:
                run_start = index
            run_keys.append(key)
            run_values.append(value)
            run_messages.append(msg)
        if run_messages:
            run_batch()
        batch.records += processed
        if processed:
            self.stats.record_batch(
                processed, messages[0].timestamp()[1], messages[-1].timestamp()[1]
            )

    def _failed(
        self,
        tp: TP,
        failed: list[Any],
        exc: BaseException,
        sent_something: bool,
        unprocessed: Sequence[Any],
    ) -> None:
        """``process_batch`` raised ``exc`` for the records of ``failed`` (all of ``tp``).

        Nothing of them in the transaction (no send, no store write): they are
        processed again one at a time (returns when they are). Else the batch is
        aborted and rewound, and the replay processes ``tp`` one record at a time up
        to the last of ``failed`` (``_singly``); raises Rewound. Either way the
        processing-error policy meets one record. Only guarantees that rewind get
        batches (see ``Engine.batch_runs``).

        Raises:
            Rewound: The batch was aborted and rewound.
            BaseException: ``exc`` itself when it is not a record's fault (as
                :meth:`RecordFailures.process_failed`).
        """
        if isinstance(exc, (Rewound, ConfigError, StateError)) or not isinstance(exc, Exception):
            raise exc
        if not sent_something:
            self.one_at_a_time(failed)
            return
        # Under at_least_once the abort drops the store writes and the outputs not yet
        # delivered; outputs already delivered are sent again by the replay.
        self._singly[tp] = failed[-1].offset()
        self.committer.abort(
            "processing_error",
            f"a batch of {len(failed)} records of {tp[0]}[{tp[1]}] failed after producing "
            f"output ({type(exc).__name__}: {exc}); they are replayed one at a time",
            unprocessed,
        )
        raise Rewound()
