"""Running an :class:`~eos.processor.AsyncProcessor`: many records at once, exactly-once.

The engine stays one thread. It owns one asyncio event loop and runs it in
bounded steps between its own Kafka calls (never inside one), so the consumer,
the producer and the rebalance callbacks are used exactly as for a synchronous
processor. :class:`AsyncRunner` is the one owner of the records in flight:

- **admission**: the engine consumes at most ``max_in_flight`` minus the
  records in flight, so a slow call pauses consumption instead of growing
  memory; each admitted record moves its partition's position at once, as a
  synchronous record does when it is processed;
- **order**: records of one key (per partition number, raw key bytes) form a
  chain that runs one record after another, in offset order; records with a
  null key chain per partition; different chains overlap;
- **commit**: :meth:`AsyncRunner.settle` runs before every commit (the
  interval, a revocation, a restore, the stop): nothing new is admitted and the
  loop runs until every admitted record finished, so the transaction holds the
  complete outputs, store writes and offsets of exactly the records it
  commits; the committed position of each partition is then the end of its
  contiguous finished prefix, everything admitted;
- **failure**: a record whose ``process`` raised (or ran past
  ``record_timeout_ms`` and was cancelled) is handed to
  :class:`~eos._records.RecordFailures` after it ended, outside the loop, as a
  synchronous failure is; the next record of its chain starts only after the
  policy was applied. An abort (:meth:`AsyncRunner.reset`, called by the
  committer when it drops a batch) cancels every record in flight, closes
  their contexts so a coroutine that lingers cannot send into a later
  transaction, and forgets the chains; the rewind replays them;
- **time**: timers, punctuations, window expiries and table updates run with
  nothing in flight (the engine settles first), so they see every earlier
  record complete, as under a synchronous processor.

Threading: the processing thread only (the consumer's close may run the
revoke callback on a helper thread while the processing thread waits; the
loop is then never running elsewhere).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from eos._committer import Rewound
from eos.config import ASYNC_TRANSACTION_SHARE
from eos.errors import RecordTimeout, StateError, StuckCoroutineError
from eos.processor import _NO_TIME, AsyncProcessor, Context, Processor
from eos.record import Record, TopicPartition

if TYPE_CHECKING:
    from eos._engine_time import EngineTime
    from eos._guarantee import Guarantee
    from eos._records import RecordFailures
    from eos._stop import StopSignal
    from eos.stats import EngineStats
    from eos.timers import Timers

__all__ = ["AsyncHooks", "AsyncRunner", "RecordContext", "is_async", "run_hook"]

log = logging.getLogger("eos.engine")

CANCEL_GRACE_S = 5.0
"""How long a cancelled record's coroutine gets to end before the run stops."""
_DRAIN_CHECK_S = 0.1
"""While draining, how often the stop's grace and the transaction's age are checked."""
_IDLE_STEP_S = 0.005
"""With room for more records: how long one step waits for a completion before
the engine looks for new records again."""


def run_hook(loop: asyncio.AbstractEventLoop, result: object) -> object:
    """``result`` of a hook, awaited on ``loop`` when it is awaitable."""
    if inspect.isawaitable(result):
        return loop.run_until_complete(result)
    return result


class RecordContext(Context[Any, Any]):
    """The context of one async record: its own ``record`` and sends across awaits.

    Made per record from the engine's context (a copy of its references, no
    ``__init__``). Closed when the record ends or is cancelled: sends and
    store access after that raise, so a coroutine that outlives its record
    cannot write into a later transaction.
    """

    __slots__ = ("_msg", "_runner", "_stream", "_touched")
    _msg: Any
    _runner: AsyncRunner
    _stream: int | None
    _touched: bool

    @property
    def stream_time(self) -> int | None:
        """The partition's stream time when this record was admitted (its own included)."""
        stream = self._stream
        return None if stream is None or stream == _NO_TIME else stream

    @property
    def timers(self) -> Timers:
        if self._timers is None:
            if self._time is None:
                raise StateError("ctx.timers: this context is not run by an eos engine")
            from eos.timers import Timers

            self._timers = Timers(self, self._time)
        return self._timers

    def store(self, name: Any) -> Any:
        self._touched = True
        return super().store(name)

    def _record_late(self, *, dropped: bool = True) -> None:
        self._runner.late(self, dropped)

    def close(self) -> None:
        """Refuse sends and stores from now on."""
        self._produce = _closed
        self._stores = _closed_store
        self._views = None
        self._on_full = None


def _closed(topic: str, *_args: object, **_kwargs: object) -> None:
    raise StateError(
        f"ctx.send to {topic!r} after the record's process() ended or was cancelled: a "
        "coroutine that outlives its record (a task it started, a timeout it ignored) can "
        "not send; await everything it sends before process() returns"
    )


def _closed_store(name: str, _partition: int) -> Any:
    raise StateError(
        f"ctx.store({name!r}) after the record's process() ended or was cancelled; await "
        "everything that uses the store before process() returns"
    )


class _Item:
    """One admitted record: where it is, its context, its outcome."""

    __slots__ = (
        "chain",
        "ctx",
        "done",
        "epoch",
        "error",
        "msg",
        "record",
        "started",
        "stream",
        "task",
        "timed_out",
    )

    def __init__(
        self, record: Record[Any, Any], msg: Any, chain: object, stream: int | None
    ) -> None:
        self.record = record
        self.msg = msg
        self.chain = chain
        self.stream = stream
        self.epoch = 0
        self.ctx: RecordContext | None = None
        self.task: asyncio.Task[None] | None = None
        self.started = 0.0
        self.done = False
        self.error: BaseException | None = None
        self.timed_out = False


class AsyncRunner:
    """The records of an :class:`AsyncProcessor` in flight; see the module docstring.

    Args:
        processor: The processor (or a DSL topology with async steps).
        ctx: The engine's context, copied per record.
        records: Applies ``processing_error_policy`` to a failed record.
        timing: Counts (and dead-letters) late records of windows.
        stats: The engine's counters.
        max_in_flight: The most records running at once.
        record_timeout_s: How long one record may run.
        stop: The stop request (a drain gives up when its grace period ran out).
        guarantee: The transaction whose age bounds a drain.
        transaction_timeout_s: ``transaction_timeout_ms`` in seconds.
    """

    def __init__(
        self,
        processor: Processor[Any, Any],
        *,
        ctx: Context[Any, Any],
        records: RecordFailures,
        timing: EngineTime,
        stats: EngineStats,
        max_in_flight: int,
        record_timeout_s: float,
        stop: StopSignal,
        guarantee: Guarantee,
        transaction_timeout_s: float,
    ) -> None:
        self.loop = asyncio.new_event_loop()
        self.stop = stop
        self.guarantee = guarantee
        # Abort rather than let the broker time the transaction out (and fence us).
        self.transaction_limit_s = transaction_timeout_s * ASYNC_TRANSACTION_SHARE
        self._process: Callable[..., Any] = processor.process
        self.ctx = ctx
        # The engine's context stamps lineage headers: so does each record's.
        self.lineage = getattr(type(ctx), "stamps_lineage", False)
        self.records = records
        self.timing = timing
        self.stats = stats
        self.limit = max_in_flight
        self.read_ahead = max(1, max_in_flight // 4)
        """Admitted records waiting for a free slot beyond ``limit``: a finished record's
        slot is taken at once on the loop, without waiting for the engine's next turn."""
        self.timeout_s = record_timeout_s
        self.size = 0
        """Records admitted and not finished (running, ready, or waiting in their chain)."""
        self.careful = False
        """A careful replay (outputs attributed to records through the engine's
        context): one record at a time."""
        self._chains: dict[object, deque[_Item]] = {}
        self._ready: deque[_Item] = deque()
        # Started and not finished, in start order (a dict: O(1) removal).
        self._running: dict[_Item, None] = {}
        self._failed: list[_Item] = []
        self._worker_tasks: set[asyncio.Task[None]] = set()
        self._parked: list[asyncio.Future[None]] = []
        """Idle workers waiting for a ready record (woken by ``_dispatch``)."""
        self._workers = 0
        """Worker tasks alive (at most ``limit``), of which ``_starting`` not started yet."""
        self._starting = 0
        self._wake: asyncio.Future[None] | None = None
        self._draining = False
        self._epoch = 0
        """Moves on at every abort: a coroutine of an earlier epoch is forgotten."""
        self.unprocessed: Sequence[Any] = ()
        """Consumed messages not admitted yet, rewound too when a failure aborts."""

    # -- admission ------------------------------------------------------------

    @property
    def room(self) -> int:
        """How many more records may be admitted now."""
        if self.careful:
            return 0 if self.size else 1
        return self.limit + self.read_ahead - self.size

    def submit(self, record: Record[Any, Any], msg: Any, stream_time: int | None) -> None:
        """Admit ``record`` (consumed as ``msg``): it runs as soon as a slot is free,
        after the records of its key admitted before it."""
        chain_key = (record.partition, msg.key())
        item = _Item(record, msg, chain_key, stream_time)
        self.size += 1
        waiting = self._chains.get(chain_key)
        if waiting is not None:
            waiting.append(item)
            return
        self._chains[chain_key] = deque()
        self._ready.append(item)
        self._dispatch()

    def _dispatch(self) -> None:
        """Start workers for the ready records, up to ``max_in_flight`` workers.

        A worker runs ready records one after another until none is left, so a
        finished record's slot goes to the next one on the loop, with no task made
        per record.
        """
        ready = len(self._ready)
        parked = self._parked
        while ready > self._starting:
            if parked:
                self._starting += 1
                parked.pop().set_result(None)
            elif self._workers < self.limit:
                self._workers += 1
                self._starting += 1
                worker = self.loop.create_task(self._work())
                self._worker_tasks.add(worker)
                worker.add_done_callback(self._worker_tasks.discard)
            else:
                break

    def _begin(self, item: _Item, task: asyncio.Task[Any] | None) -> RecordContext:
        """``item`` starts on the worker ``task``: its context, its clock."""
        base = self.ctx
        ctx = RecordContext.__new__(RecordContext, lineage=self.lineage)
        ctx.application_id = base.application_id
        ctx.record = item.record
        ctx.sends = 0
        ctx._produce = base._produce
        ctx._key_serialize = base._key_serialize
        ctx._value_serialize = base._value_serialize
        ctx._raw = base._raw
        ctx._stores = base._stores
        ctx._views = base._views
        ctx._on_full = base._on_full
        ctx._partition = None
        ctx._assigning = None
        ctx._time = base._time
        ctx._timers = None
        ctx._late = base._late
        ctx._msg = item.msg
        ctx._runner = self
        ctx._stream = item.stream
        ctx._touched = False
        item.ctx = ctx
        if self.careful:
            base.record = item.record  # the careful produce attributes through it
        item.started = time.monotonic()
        item.epoch = self._epoch
        item.task = task
        self._running[item] = None
        return ctx

    def _next_of(self, item: _Item) -> None:
        """``item`` is done with: its key's next record becomes ready."""
        waiting = self._chains[item.chain]
        if waiting:
            self._ready.append(waiting.popleft())
        else:
            del self._chains[item.chain]

    async def _work(self) -> None:
        """One worker: run ready records; with none left, park until there are (it ends
        only when cancelled: an abort or the stop)."""
        self._starting -= 1
        task = asyncio.current_task()
        ready = self._ready
        process = self._process
        loop = self.loop
        while True:
            if not ready:
                parked = loop.create_future()
                self._parked.append(parked)
                await parked
                self._starting -= 1  # woken by _dispatch, which counted it
                continue
            item = ready.popleft()
            ctx = self._begin(item, task)
            try:
                await process(item.record, ctx)
            except asyncio.CancelledError:
                if not item.timed_out:
                    raise  # an abort: nobody waits for this record (or worker) any more
                item.error = self._timeout_error(item)
            except BaseException as exc:
                item.error = exc
            else:
                if item.timed_out:  # it swallowed the cancellation
                    item.error = self._timeout_error(item)
            ctx.close()
            if item.epoch != self._epoch:
                return  # aborted meanwhile (it ignored the cancellation)
            if item.timed_out and task is not None and hasattr(task, "uncancel"):
                task.uncancel()  # the timeout's cancellation is handled: go on
            item.done = True
            del self._running[item]
            self._ended(item, ctx)

    def _ended(self, item: _Item, ctx: RecordContext) -> None:
        """On the loop: a record ended; hand a failure to the engine, else go on."""
        wake = self._wake
        if item.error is not None:
            # Handled by the engine (the policy) before its key's next record starts.
            self._failed.append(item)
            if wake is not None and not wake.done():
                wake.set_result(None)
            return
        self.size -= 1
        base = self.ctx
        base.sends += ctx.sends
        if self.careful:
            base.record = None
        self._next_of(item)
        if wake is None or wake.done():
            return
        if self._draining:
            if not self.size:
                wake.set_result(None)
        elif len(self._ready) <= self.read_ahead // 2 or not self._running:
            wake.set_result(None)  # the engine tops the window up

    def _timeout_error(self, item: _Item) -> RecordTimeout:
        record = item.record
        return RecordTimeout(
            f"process() of {record.topic}[{record.partition}]@{record.offset} did not finish "
            f"within record_timeout_ms ({self.timeout_s * 1000:.0f} ms) and was cancelled"
        )

    # -- running ----------------------------------------------------------------

    def step(self, timeout: float) -> None:
        """Run the loop until a record finishes (or ``timeout``), then handle what finished.

        Raises:
            Rewound: A failed record aborted the batch.
            ProcessingError, ConfigError: as for a synchronous record.
        """
        if not self._failed and self.size:
            now = time.monotonic()
            if self.room > 0:
                timeout = min(timeout, _IDLE_STEP_S)
            for oldest in self._running:
                timeout = min(timeout, max(0.0, oldest.started + self.timeout_s - now))
                break
            loop = self.loop
            wake = self._wake = loop.create_future()
            handle = loop.call_later(timeout, _wake_up, wake)
            try:
                loop.run_until_complete(wake)
            finally:
                handle.cancel()
                self._wake = None
            self._expire(time.monotonic())
        self._finish()
        self.stats.in_flight = self.size

    def drain(self, unprocessed: Sequence[Any] = ()) -> None:
        """Run until every admitted record finished (a commit, a timer, a table update).

        Raises:
            Rewound: A failed record aborted the batch, or the records in flight
                could not finish in time (the stop's grace period ran out, or the
                transaction neared ``transaction_timeout_ms``): then they were
                cancelled and the batch aborted, to be replayed.
        """
        self.unprocessed = unprocessed
        self._draining = True
        try:
            while self.size:
                late = self._too_late()
                if late:
                    committer = self.records.committer
                    committer.abort(
                        "records_in_flight",
                        f"{self.size} records in flight did not finish: {late}",
                        [*self.unprocessed],
                        counted=not self.stop.is_set(),
                    )
                    raise Rewound()
                self.step(_DRAIN_CHECK_S)
        finally:
            self._draining = False
            self.unprocessed = ()

    def _too_late(self) -> str | None:
        """Why the records in flight can no longer be waited for, if they cannot."""
        if self.stop.overdue():
            return "the stop's grace period (shutdown_timeout_s) ran out"
        age = self.guarantee.transaction_age()
        if age >= self.transaction_limit_s:
            return (
                f"the transaction has been open {age:.0f} s, near transaction_timeout_ms "
                "(records of one key run one after another: a chain of slow records holds "
                "the commit)"
            )
        return None

    def settle(self) -> bool:
        """Before a commit: drain. False if the batch was aborted instead."""
        try:
            self.drain()
        except Rewound:
            return False
        return True

    def _expire(self, now: float) -> None:
        """Cancel the records running past ``record_timeout_ms``; stop on one that will not end."""
        for item in self._running:
            if item.started + self.timeout_s > now:
                break  # started in order: the rest are younger
            if not item.timed_out:
                item.timed_out = True
                self.stats.record_timeouts += 1
                log.warning(
                    "%s[%d]@%d: process() runs longer than record_timeout_ms (%.0f ms); "
                    "cancelling it",
                    item.record.topic,
                    item.record.partition,
                    item.record.offset,
                    self.timeout_s * 1000,
                )
                if item.task is not None:
                    item.task.cancel()
            elif now > item.started + self.timeout_s + CANCEL_GRACE_S:
                raise StuckCoroutineError(
                    f"process() of {item.record.topic}[{item.record.partition}]@"
                    f"{item.record.offset} was cancelled after record_timeout_ms and did not "
                    f"end within {CANCEL_GRACE_S:.0f} s (it catches CancelledError and goes "
                    "on): stopping, as its effects could land in a later transaction. Let "
                    "asyncio.CancelledError propagate"
                )

    def _finish(self) -> None:
        """Handle the failed records, outside the loop: the policy, then their keys' next."""
        failed = self._failed
        if not failed:
            return
        self._failed = []
        base = self.ctx
        for item in failed:
            self.size -= 1
            ctx = item.ctx
            if self.careful:
                base.record = None
            sent = False
            if ctx is not None:
                base.sends += ctx.sends
                sent = ctx.sends > 0 or ctx._touched
            self.records.process_failed(
                item.msg,
                item.error,  # type: ignore[arg-type]
                sent,
                [item.msg, *self.unprocessed],
            )
            self._next_of(item)
            self._dispatch()

    # -- abort, hooks, stop -----------------------------------------------------

    def reset(self) -> None:
        """The batch was aborted: cancel every record in flight and forget them.

        Raises:
            StuckCoroutineError: A cancelled coroutine did not end within
                :data:`CANCEL_GRACE_S`.
        """
        self._epoch += 1
        running = list(self._running)
        for item in running:
            if item.ctx is not None:
                item.ctx.close()
        workers = [t for t in self._worker_tasks if not t.done()]
        self._worker_tasks.clear()
        for task in workers:
            task.cancel()
        self._workers = 0
        self._starting = 0
        self._parked.clear()
        self._running.clear()
        self._chains.clear()
        self._ready.clear()
        self._failed = []
        self.size = 0
        self.stats.in_flight = 0
        if self.careful:
            self.ctx.record = None
        tasks = workers
        if tasks and not self.loop.is_running():
            finished, pending = self.loop.run_until_complete(
                asyncio.wait(tasks, timeout=CANCEL_GRACE_S)
            )
            for task in finished:
                if not task.cancelled():
                    task.exception()  # retrieved: no "never retrieved" warning
            if pending:
                raise StuckCoroutineError(
                    f"{len(pending)} cancelled process() coroutines did not end within "
                    f"{CANCEL_GRACE_S:.0f} s of an abort; stopping so their effects cannot land "
                    "in a later transaction. Let asyncio.CancelledError propagate"
                )
        self._failed = []

    def late(self, ctx: RecordContext, dropped: bool) -> None:
        """A window dropped ``ctx``'s record as late: count (and dead-letter) it."""
        base = self.ctx
        timing = self.timing
        saved = base.record
        base.record = ctx.record
        timing.current = ctx._msg
        try:
            timing.late(dropped)
        finally:
            base.record = saved
            timing.current = None

    def run(self, result: object) -> object:
        """A hook's result, awaited when it is a coroutine (nothing else is in flight)."""
        return run_hook(self.loop, result)

    def close(self) -> None:
        """Cancel what is left and close the loop (at shutdown)."""
        try:
            self.reset()
        finally:
            loop = self.loop
            if not loop.is_closed():
                try:
                    loop.run_until_complete(loop.shutdown_asyncgens())
                finally:
                    loop.close()


def _wake_up(wake: asyncio.Future[None]) -> None:
    if not wake.done():
        wake.set_result(None)


class AsyncHooks(Processor[Any, Any]):
    """The hooks of an async processor as the synchronous calls the engine makes.

    ``on_assign``, ``on_revoke``, ``on_timer`` are awaited on the runner's loop
    when they are coroutines (a DSL topology's hooks are plain calls);
    ``close()`` awaits ``teardown()`` and closes the loop.
    """

    def __init__(
        self,
        processor: Processor[Any, Any],
        run: Callable[[object], object],
        close_loop: Callable[[], None],
    ) -> None:
        self._processor: Any = processor
        self.display_name = type(processor).__name__
        self._run = run
        self._close_loop = close_loop
        self.stores = processor.stores

    def setup(self) -> None:
        if isinstance(self._processor, AsyncProcessor):
            self._run(self._processor.setup())

    def on_assign(self, partitions: list[TopicPartition], ctx: Context[Any, Any]) -> None:
        self._run(self._processor.on_assign(partitions, ctx))

    def on_revoke(self, partitions: list[TopicPartition]) -> None:
        self._run(self._processor.on_revoke(partitions))

    def on_timer(self, key: Any, timestamp: int, ctx: Context[Any, Any]) -> None:
        self._run(self._processor.on_timer(key, timestamp, ctx))

    def close(self) -> None:
        processor = self._processor
        try:
            if isinstance(processor, AsyncProcessor):
                self._run(processor.teardown())
            processor.close()
        finally:
            self._close_loop()


def is_async(processor: object) -> bool:
    """Whether ``processor``'s ``process`` is a coroutine function (an AsyncProcessor,
    a DSL topology with async steps)."""
    return isinstance(processor, AsyncProcessor) or inspect.iscoroutinefunction(
        getattr(processor, "process", None)
    )
