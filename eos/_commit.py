"""The engine's commit, abort and rewind steps, for the three guarantees.

These are :class:`~eos.engine.Engine` methods, kept in their own module.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka import TopicPartition as KafkaTopicPartition

from eos._engine_base import TP, EngineBase
from eos._failures import _Abort
from eos.errors import AbortableTransactionError, FatalTransactionError

log = logging.getLogger("eos.engine")


class Committing(EngineBase):
    """Engine methods: begin, commit (EOS / at-least-once / at-most-once), abort, rewind."""

    def _begin(self) -> None:
        if self._txn is None:
            return
        self._txn.begin()
        self._in_txn = True

    def _commit(self) -> None:
        """Commit the open batch; on an abortable failure, abort and rewind."""
        if self._eos:
            self._commit_eos()
        elif self._guarantee == "at_least_once":
            self._commit_alos()
        else:
            self._commit_amos()

    def _commit_amos(self) -> None:
        """at_most_once: offsets were committed before processing; just deliver."""
        started = time.monotonic()
        remaining = self.producer.flush(self.config.transaction_timeout_ms / 1000.0)
        failures = len(self._alos_failures) + remaining
        if failures:
            log.warning("at_most_once: %d output record(s) were not delivered", failures)
            self._alos_failures.clear()
        if self.stores is not None:
            self.stores.commit()
        self._committed_positions(started)

    def _commit_eos(self) -> None:
        txn = self._txn
        if txn is None:
            return
        if not self._in_txn:
            self._positions.clear()
            return
        started = time.monotonic()
        offsets = [KafkaTopicPartition(t, p, o) for (t, p), o in self._positions.items()]
        try:
            # (1) outputs and changelog records were produced while processing.
            # (2) the input positions join the transaction, fenced by group generation.
            if offsets:
                txn.send_offsets(offsets, self.consumer.consumer_group_metadata())
            self._commit_attempts += 1
            if self._commit_attempts in self._inject_failures:
                raise AbortableTransactionError(
                    f"injected failure of commit attempt {self._commit_attempts} "
                    "(EOS_TEST_FAIL_COMMITS)"
                )
            # (3) commit: flushes, then outputs + changelog + offsets become visible.
            txn.commit()
        except AbortableTransactionError as exc:
            self._after_failed_commit(exc)
            return
        except FatalTransactionError:
            self._mark_dead()
            raise
        self._in_txn = False
        # (4) local stores: overlay + changelog offset in one write per store partition.
        if self.stores is not None:
            self.stores.commit()
        self._committed_positions(started)

    def _commit_alos(self) -> None:
        started = time.monotonic()
        remaining = self.producer.flush(self.config.transaction_timeout_ms / 1000.0)
        if remaining or self._alos_failures or self._delivery_failures:
            failures = list(self._alos_failures)
            self._alos_failures.clear()
            self._after_failed_commit(
                AbortableTransactionError(
                    f"{remaining} undelivered, {len(failures)} failed deliveries"
                    + (f" (first: {failures[0]})" if failures else "")
                )
            )
            return
        if self._positions:
            offsets = [KafkaTopicPartition(t, p, o) for (t, p), o in self._positions.items()]
            self.consumer.commit(offsets=offsets, asynchronous=False)
        if self.stores is not None:
            self.stores.commit()
        self._committed_positions(started)

    def _committed_positions(self, started: float) -> None:
        if self._poison:
            for key in [k for k in self._poison if self._positions.get(k[:2], -1) > k[2]]:
                del self._poison[key]
        for tp, position in self._positions.items():
            self._committed[tp] = position
            self._first_seen.pop(tp, None)
            careful = self._careful.get(tp)
            if careful is not None and position >= careful:
                del self._careful[tp]
        if not self._careful:
            self._one_by_one = False
        self._positions.clear()
        self._delivery_failures.clear()
        sends = self._ctx.sends if self._ctx is not None else 0
        self.stats.record_commit(
            self._txn_records, time.monotonic() - started, produced=sends - self._txn_sends
        )
        self._txn_sends = sends
        self._refresh_lag()
        log.debug(
            "committed %d records in %.1f ms",
            self._txn_records,
            1000 * (time.monotonic() - started),
        )
        self._txn_records = 0

    def _commit_before(self, messages: Sequence[Any]) -> None:
        """at_most_once: commit the positions past ``messages`` before processing them."""
        last: dict[TP, int] = {}
        for msg in messages:
            if msg.error() is None:
                last[(msg.topic(), msg.partition())] = msg.offset() + 1
        if last:
            self.consumer.commit(
                offsets=[KafkaTopicPartition(t, p, o) for (t, p), o in last.items()],
                asynchronous=False,
            )
            self._committed.update(last)

    def _fail_batch(
        self,
        kind: str,
        reason: str,
        batch: Sequence[Any],
        index: int,
        *,
        reraise: bool = True,
    ) -> None:
        """Abort the open transaction, drop overlays, rewind; raise _Abort if ``reraise``.

        ``kind`` is the metric label (processing_error, commit_failed,
        output_rejected, produce_failed, partitions_lost); ``reason`` the log text.
        """
        self.stats.record_abort(kind)
        log.info("aborting transaction (%s): %s", kind, reason)
        if self._txn is not None and self._in_txn:
            try:
                self._txn.abort()
            except FatalTransactionError:
                self._mark_dead()
                raise
            self._in_txn = False
        if self.stores is not None:
            self.stores.abort()
        self._rewind(batch, index)
        self._positions.clear()
        self._delivery_failures.clear()
        self._txn_records = 0
        if reraise:
            raise _Abort(reason)

    def _rewind(self, batch: Sequence[Any], index: int) -> None:
        """Seek every partition that moved since the last commit back to it."""
        targets: dict[TP, int] = {}
        for tp in self._positions:
            targets[tp] = self._rewind_target(tp)
        for msg in batch[index:]:
            if msg.error() is not None:
                continue
            tp = (msg.topic(), msg.partition())
            if tp in self._assigned and tp not in targets:
                committed = self._committed.get(tp, self._first_seen.get(tp))
                targets[tp] = committed if committed is not None else msg.offset()
        for tp, offset in targets.items():
            if tp not in self._assigned:
                continue
            try:
                self.consumer.seek(KafkaTopicPartition(tp[0], tp[1], offset))
            except KafkaException as exc:
                raise FatalTransactionError(
                    f"cannot rewind {tp[0]}[{tp[1]}] to {offset} after an abort ({exc}); "
                    "stopping so no record is skipped"
                ) from exc
        if targets:
            log.info(
                "rewound %s", ", ".join(f"{t}[{p}]->{o}" for (t, p), o in sorted(targets.items()))
            )

    def _rewind_target(self, tp: TP) -> int:
        committed = self._committed.get(tp)
        if committed is not None:
            return committed
        first = self._first_seen.get(tp)
        if first is None:
            raise FatalTransactionError(f"no rewind position known for {tp[0]}[{tp[1]}]")
        return first

    def _mark_dead(self) -> None:
        if self.stores is not None:
            self.stores.abort()
        self._in_txn = False
        self.stats.fenced += 1
        self._stopping = True
