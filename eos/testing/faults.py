"""Ready-made fault hooks for tests: pass one as ``eos.Application(..., faults=...)``.

::

    from eos.testing.faults import FailCommits

    app = eos.Application(..., faults=FailCommits(3, 5))   # attempts 3 and 5 fail

Each class implements one hook of :class:`eos.faults.Faults`; combine them
with :class:`Combined`. A subprocess test app builds its hooks from its own
command-line arguments (no production module reads an environment variable).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

from confluent_kafka import KafkaError

from eos.errors import AbortableTransactionError, FatalTransactionError
from eos.faults import Faults

__all__ = [
    "Combined",
    "CrashAfterKafkaCommit",
    "CrashBeforeCommit",
    "FailCommits",
    "HangingClose",
    "HangingSendOffsets",
    "MisreportCommits",
    "SlowCommits",
    "SlowRestore",
]

log = logging.getLogger("eos.testing")


class FailCommits(Faults):
    """Commit attempts with these numbers (from 1) fail as if the broker answered abortably."""

    def __init__(self, *attempts: int) -> None:
        self.attempts = frozenset(attempts)
        self.failed = 0

    def before_commit(self, attempt: int) -> None:
        if attempt in self.attempts:
            self.failed += 1
            raise AbortableTransactionError(
                f"injected failure of commit attempt {attempt} (FailCommits)"
            )


class MisreportCommits(Faults):
    """Commit attempts with these numbers (from 1) go through on the broker and then fail
    on the client with a fatal error, as librdkafka reports a commit that succeeded on the
    broker after the transaction had failed locally. The outputs and offsets are committed;
    the engine must find that out instead of redoing the batch."""

    def __init__(self, *attempts: int) -> None:
        self.attempts = frozenset(attempts)
        self.misreported = 0

    def commit_returned(self, attempt: int) -> None:
        if attempt in self.attempts:
            self.misreported += 1
            text = (
                f"injected: commit attempt {attempt} succeeded on the broker but the "
                "transaction had already failed locally (MisreportCommits)"
            )
            raise FatalTransactionError(
                text, KafkaError(KafkaError._MSG_TIMED_OUT, text, fatal=True)
            )


class CrashAfterKafkaCommit(Faults):
    """SIGKILL this process on the ``n``-th commit with store writes, after the Kafka
    commit and before the local store write: the window in which local state lags."""

    def __init__(self, n: int) -> None:
        self.n = n

    def after_kafka_commit(self, attempt: int) -> None:
        if attempt == self.n:
            log.warning("CrashAfterKafkaCommit(%d): killing this process now", self.n)
            os.kill(os.getpid(), signal.SIGKILL)


class CrashBeforeCommit(Faults):
    """SIGKILL this process on commit attempt ``n``, after the offsets were sent into the
    transaction and before ``commit_transaction``: the group coordinator then holds pending
    transactional offsets until the transaction is aborted."""

    def __init__(self, n: int) -> None:
        self.n = n

    def before_commit(self, attempt: int) -> None:
        if attempt == self.n:
            log.warning("CrashBeforeCommit(%d): killing this process now", self.n)
            os.kill(os.getpid(), signal.SIGKILL)


class SlowCommits(Faults):
    """Sleep ``seconds`` before ``commit_transaction`` from attempt ``start`` on, logging
    ``slow commit attempt N`` first (so a test can act while the commit is under way)."""

    def __init__(self, seconds: float, start: int = 2) -> None:
        self.seconds = seconds
        self.start = start

    def before_commit(self, attempt: int) -> None:
        if attempt >= self.start:
            log.warning("slow commit attempt %d: sleeping %.1fs", attempt, self.seconds)
            time.sleep(self.seconds)


class SlowRestore(Faults):
    """Sleep ``seconds`` after every restored chunk (a long restore, made observable)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.chunks = 0

    def restore_chunk(self, store: str, partition: int, records: int) -> None:
        self.chunks += 1
        time.sleep(self.seconds)


class HangingClose(Faults):
    """The close of ``client`` (``"consumer"`` or ``"producer"``) never returns (until
    :meth:`release`), as librdkafka's can after a broker bounce."""

    def __init__(self, client: str) -> None:
        self.client = client
        self.hung = threading.Event()
        self._release = threading.Event()

    def closing(self, client: str) -> None:
        if client == self.client:
            self.hung.set()
            self._release.wait()

    def release(self) -> None:
        self._release.set()


class HangingSendOffsets(Faults):
    """The ``n``-th ``send_offsets_to_transaction`` never returns (until :meth:`release`),
    as librdkafka's can when the group coordinator's broker went away."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.calls = 0
        self.hung = threading.Event()
        self._release = threading.Event()

    def sending_offsets(self) -> None:
        self.calls += 1
        if self.calls == self.n:
            self.hung.set()
            self._release.wait()

    def release(self) -> None:
        self._release.set()


class Combined(Faults):
    """Several hooks at once: each call goes to every part."""

    def __init__(self, *parts: Faults) -> None:
        self.parts = parts

    def before_commit(self, attempt: int) -> None:
        for part in self.parts:
            part.before_commit(attempt)

    def commit_returned(self, attempt: int) -> None:
        for part in self.parts:
            part.commit_returned(attempt)

    def after_kafka_commit(self, attempt: int) -> None:
        for part in self.parts:
            part.after_kafka_commit(attempt)

    def restore_chunk(self, store: str, partition: int, records: int) -> None:
        for part in self.parts:
            part.restore_chunk(store, partition, records)

    def closing(self, client: str) -> None:
        for part in self.parts:
            part.closing(client)

    def sending_offsets(self) -> None:
        for part in self.parts:
            part.sending_offsets()
