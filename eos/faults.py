"""The fault-injection seam: hooks the engine calls at fixed points of its work.

Production code passes nothing (:data:`NO_FAULTS`, whose hooks do nothing).
Tests pass an object of their own to ``eos.Application(..., faults=...)`` to
make a commit fail, kill the process between the Kafka commit and the local
store write, or slow a restore down, and then check that the guarantees
still hold. Ready-made hooks live in :mod:`eos.testing.faults`.

No production module reads an environment variable to decide on a fault.
"""

from __future__ import annotations

__all__ = ["NO_FAULTS", "Faults"]


class Faults:
    """Hooks called on the processing thread; the default implementation does nothing.

    A hook may raise to simulate a failure at that point (see each method), or
    block to simulate a slow step. Hooks must not touch the engine's clients.
    """

    def before_commit(self, attempt: int) -> None:
        """Called before ``commit_transaction`` (after the offsets were sent).

        ``attempt`` counts commit attempts from 1. Raise
        :class:`~eos.errors.AbortableTransactionError` to make this commit
        fail as if the broker had answered with an abortable error.

        A sink (``PostgresProcessor``) calls it after its offsets update and
        before ``COMMIT`` (holding the offsets rows' locks), with the number of
        the commit being attempted (a retried commit has the same number);
        block there (or stop the process) to pause it at that moment.
        """

    def commit_returned(self, attempt: int) -> None:
        """Called right after the commit (``attempt`` counts commit attempts from 1)
        returned successfully, before anything else. Raise
        :class:`~eos.errors.FatalTransactionError` to make a commit that went
        through on the broker fail on the client, as librdkafka reports "commit
        succeeded on the broker but the transaction had already failed locally"."""

    def after_kafka_commit(self, attempt: int) -> None:
        """Called after a commit with store writes succeeded in Kafka, before the
        local store write (step 4): the window in which local state lags the
        changelog. ``attempt`` counts such commits from 1."""

    def restore_chunk(self, store: str, partition: int, records: int) -> None:
        """Called after each chunk of changelog records a restore applied."""

    def sending_offsets(self) -> None:
        """Called on the helper thread that is about to call
        ``send_offsets_to_transaction``; block here to simulate a call librdkafka
        never returns from."""

    def closing(self, client: str) -> None:
        """Called at shutdown on the thread that is about to close ``client``
        (``"consumer"`` or ``"producer"``); block here to simulate a close that
        never returns."""


NO_FAULTS = Faults()
"""The hooks production runs with: all no-ops."""
