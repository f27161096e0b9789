"""The consume-process-commit loop, over composed parts.

One :class:`Engine` runs one application instance on one thread. Under
``exactly_once_v2`` each transaction holds a batch of input records; its
outputs, its store changelog records and its input offsets commit together or
not at all::

    init_transactions()
    loop:
        restore a step of newly assigned stores (their partitions are paused),
            after committing the open batch: never inside a transaction
        batch = consume()                 # rebalance callbacks run in here
            (with tables: stream and table partitions put in timestamp order)
        begin_transaction() lazily on the first record
        process each record -> produce outputs, changelog; position = offset + 1
            (a record of a table's topic updates the table instead)
            (a processor that uses time: the record moves its partition's stream
            time first; timers and window expiries due then fire right after it)
        wall-clock timers and punctuations that are due fire, even with no input
        when the commit interval or batch limit is reached, or on stop/revoke:
            (1) changelog records are already produced; the stream time of each
                partition that moved is written to the internal time store
            (2) send_offsets_to_transaction(positions, group metadata)
            (3) commit_transaction()
            (4) write store overlays + changelog offsets locally
        on a failed batch: abort, drop overlays, seek back, back off, carry on
        on a fatal failure (fenced): stop at once; never touch the rest of the batch

The parts, each owning its state and handed what it uses:

- :class:`~eos._batch.Batch` (the open batch) and
  :class:`~eos._batch.Assignment` (what this instance owns);
- a :class:`~eos._guarantee.Guarantee` (exactly_once_v2, at_least_once or
  at_most_once): the producer, begin/commit/abort/renew;
- :class:`~eos._outputs.Outputs`: the produce paths and the attribution of
  failed deliveries to input records;
- :class:`~eos._committer.Committer`: the commit and abort sequences, the
  diagnosis of a failed batch, the abort limit;
- :class:`~eos._records.RecordFailures`: ``processing_error_policy``;
- :class:`~eos._rebalance.RebalanceListener`: the consumer callbacks and the
  stepwise restore;
- :class:`~eos.state.manager.StoreManager`: overlays, changelog, restore;
- :class:`~eos._tables.Tables`: tables (their topics are their changelogs),
  the timestamp order across joined partitions, global tables and the
  repartition topics of a DSL topology;
- :class:`~eos._time.TimeKeeper`: stream time, timers, punctuations and the
  expiry of time-driven (window) stores; :class:`~eos._engine_time.EngineTime`
  fires them inside the engine's transactions and owns their failures.

Every exit that is not a clean stop aborts the open transaction BEFORE the
consumer is closed: closing runs the revoke callback, which then aborts
instead of committing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from eos._admin import KafkaLog, check_topics
from eos._async import AsyncHooks, AsyncRunner, is_async
from eos._batch import TP, Assignment, Batch, Poison, redelivered
from eos._batch_runs import BatchRuns
from eos._committer import Committer, Rewound
from eos._engine_time import EngineTime, wall_clock_ms
from eos._guarantee import Guarantee, for_config
from eos._kafka_errors import Cause, cause_of, error_name
from eos._lifecycle import run_engine
from eos._outputs import Diagnosis, Outputs
from eos._rebalance import RebalanceListener
from eos._records import RecordFailures, decode_error
from eos._stop import StopSignal
from eos._tables import Tables
from eos._time import TimeKeeper, uses_time
from eos._time_store import NEVER, TIME_STORE, time_store
from eos.batching import BatchProcessor
from eos.config import Config
from eos.dsl import input_serdes_for, internal_topics_for
from eos.errors import ConfigError, FatalTransactionError
from eos.faults import NO_FAULTS, Faults
from eos.processor import Context, Processor, undeclared_store
from eos.record import Record
from eos.serde import BytesSerde, Serde
from eos.state.base import Store
from eos.stats import EngineStats

__all__ = ["Engine"]

log = logging.getLogger("eos.engine")

_MAX_CONSUME = 5000
_IDLE_POLL_S = 0.1
_ADMIN_SERVE_S = 5.0
"""How often the loop serves the admin client's queued logs and errors."""
_CLOSE_FLOOR_S = 5.0
"""The least time a client's close gets at shutdown, even when the grace period is spent."""
_new_record = tuple.__new__


class Engine:
    """Runs one application instance: consume, process, commit, repeat.

    Lifecycle: ``run()`` blocks on the calling thread until ``stop()`` is
    called (from any thread or a signal handler), a fatal error happens, or a
    failure stops the instance (``processing_error_policy="fail"``, a missing
    topic, the abort limit). A stop requested at any moment, during start-up
    and restores too, ends ``run()`` without an error. ``run()`` always
    closes the consumer (leaving the group), the producer, the stores and the
    processor, and never lets a failure on the way out replace the error that
    ended the run.

    Args:
        config: The validated configuration.
        processor: The user's processor.
        stats: Counters shared with ``app.state`` and the metrics.
        stop: The stop request (one is made if not given).
        faults: The fault-injection seam (tests only).
    """

    def __init__(
        self,
        config: Config,
        processor: Processor,
        *,
        stats: EngineStats | None = None,
        stop: StopSignal | None = None,
        faults: Faults = NO_FAULTS,
    ) -> None:
        self.config = config
        self.processor = processor
        self.stats = stats or EngineStats(config.application_id)
        self.stop_signal = stop or StopSignal(config.shutdown_timeout_s)
        self._kafka_log = KafkaLog()
        self._admin: AdminClient | None = None
        self._admin_served_at = 0.0
        self.faults = faults
        self._key_serde: Serde = config.resolved_key_serde()
        self._value_serde: Serde = config.resolved_value_serde()
        self._kdes = _fast_deserializer(self._key_serde)
        self._vdes = _fast_deserializer(self._value_serde)
        # Topics with serdes of their own; empty (the common case) costs nothing per record.
        self._input_serdes = input_serdes_for(processor, config.input_serdes, config.application_id)
        self._topic_des: dict[str, tuple[Deserialize | None, Deserialize | None]] = {
            topic: (
                self._kdes if key_serde is None else _fast_deserializer(key_serde),
                self._vdes if value_serde is None else _fast_deserializer(value_serde),
            )
            for topic, (key_serde, value_serde) in self._input_serdes.items()
        }
        self.batch = Batch()
        self.assignment = Assignment()
        self.poison = Poison()
        # A processor that uses time keeps its stream time and timers in an internal store.
        # Global stores (every partition of their topic on every instance) are not partitioned.
        declared = list(processor.stores)
        self.global_specs: list[Any] = [s for s in declared if not isinstance(s, Store)]
        self.specs = [
            *(s for s in declared if isinstance(s, Store)),
            *([time_store()] if uses_time(processor) else []),
        ]
        # Tables, global tables and repartition topics (all empty for most processors).
        self.tables = Tables(
            config,
            self.specs,
            self.global_specs,
            internal_topics_for(processor, config.application_id),
            self.assignment,
            self._topic_serdes,
        )
        # A table's records are decoded (to check them) with the table's serdes.
        for topic, (kser, vser) in self.tables.serdes.items():
            self._topic_des[topic] = (_fast_deserializer(kser), _fast_deserializer(vser))
        self.guarantee: Guarantee = for_config(
            config, self.stop_signal, with_stores=bool(self.specs), faults=self.faults
        )
        self.outputs = Outputs(
            self.guarantee,
            dead_letter_topic=config.dead_letter_topic,
            application_id=config.application_id,
            flush_timeout_s=config.transaction_timeout_ms / 1000.0,
        )
        self.committer = Committer(
            config=config,
            guarantee=self.guarantee,
            batch=self.batch,
            assignment=self.assignment,
            poison=self.poison,
            outputs=self.outputs,
            stats=self.stats,
            stop=self.stop_signal,
            faults=faults,
        )
        self.records = RecordFailures(
            config=config,
            guarantee=self.guarantee,
            outputs=self.outputs,
            committer=self.committer,
            poison=self.poison,
            stats=self.stats,
        )
        self.rebalance = RebalanceListener(
            cooperative=_cooperative(config),
            assignment=self.assignment,
            batch=self.batch,
            poison=self.poison,
            outputs=self.outputs,
            committer=self.committer,
            processor=processor,
            stats=self.stats,
        )
        self.ctx: Context | None = None
        self.time: TimeKeeper | None = None
        self.timing = EngineTime(
            config=config,
            guarantee=self.guarantee,
            batch=self.batch,
            outputs=self.outputs,
            committer=self.committer,
            stats=self.stats,
        )
        self.consumer: Consumer | None = None
        # An async processor's records in flight, and its hooks as plain calls (at start).
        self.runner: AsyncRunner | None = None
        self.hooks: Processor = processor
        # A BatchProcessor gets its records a run of one partition at a time, unless
        # lineage headers need the one input record each output came from, or the
        # guarantee does not rewind (at_most_once: a failed batch cannot be replayed
        # to find its record).
        self.batch_runs: BatchRuns | None = None
        if (
            isinstance(processor, BatchProcessor)
            and not config.lineage_headers
            and self.guarantee.rewinds
        ):
            self.batch_runs = BatchRuns(
                processor,
                decoders=(self._kdes, self._vdes, self._topic_des),
                batch=self.batch,
                assignment=self.assignment,
                guarantee=self.guarantee,
                outputs=self.outputs,
                committer=self.committer,
                records=self.records,
                stats=self.stats,
                admit=self._admit,
                consumer_error=self._consumer_error,
                one_at_a_time=self._process_records,
            )
        if is_async(processor):
            config.check_async()
        self.committer.order = self.tables.order
        self.rebalance.order = self.tables.order

    def _topic_serdes(self, topic: str) -> tuple[Serde, Serde]:
        """The serdes the application decodes ``topic`` with."""
        key_serde, value_serde = self._input_serdes.get(topic, (None, None))
        return (key_serde or self._key_serde, value_serde or self._value_serde)

    # ------------------------------------------------------------------ control

    def stop(self) -> None:
        """Ask ``run()`` to finish the batch, commit and return. Thread-safe."""
        self.stop_signal.set()

    def run(self) -> None:
        """Run until stopped. Raises the error that ended it, if any."""
        run_engine(self.stats, self._start, self._loop, self._shutdown)

    # ------------------------------------------------------------------ start/stop

    def _start(self) -> None:
        config = self.config
        stop = self.stop_signal
        stop.check()
        tables = self.tables
        admin = check_topics(config, stop, tables.internal)
        if self.specs or self.global_specs or tables.internal:
            self._admin = admin  # the store manager keeps it for changelog topics
        stop.check()
        try:
            self.guarantee.start()
        except FatalTransactionError as exc:
            error = exc.kafka_error
            if isinstance(error, KafkaError) and cause_of(error) is Cause.CONFIG:
                # Denied (TRANSACTIONAL_ID_AUTHORIZATION_FAILED, CLUSTER_AUTHORIZATION_FAILED):
                # name the resource and the ACL instead of a bare fatal error.
                raise ConfigError(
                    self.committer.config_message(Diagnosis(Cause.CONFIG, error)),
                    "transactional.id",
                ) from exc
            raise
        stop.check()
        ctx = Context(
            application_id=config.application_id,
            produce=self.guarantee.producer.produce,
            key_serde=self._key_serde,
            value_serde=self._value_serde,
            stores=self._store_lookup,
            on_full=self._drain,
            lineage=config.lineage_headers,
        )
        self.ctx = ctx
        if is_async(self.processor):
            self._start_async(ctx)
        self.outputs.ctx = ctx
        self.committer.ctx = ctx
        self.rebalance.ctx = ctx
        keeper = TimeKeeper(
            processor=self.hooks,
            ctx=ctx,
            views=self._store_lookup,
            persistent=any(s.name == TIME_STORE for s in self.specs),
            driven=[s.name for s in self.specs if getattr(s, "time_driven", False)],
            clock=wall_clock_ms,
            begin=self.timing.begin,
        )
        ctx.attach_time(keeper, self.timing.late)
        if self.runner is not None:
            keeper.complete = self.runner.run
        self.time = keeper
        self.timing.keeper = keeper
        self.timing.ctx = ctx
        self.committer.time = keeper
        self.rebalance.time = keeper
        if self.specs:
            from eos.state.manager import StoreManager

            stores = StoreManager(
                config,
                self.specs,
                processor_name=type(self.processor).__name__,
                admin=admin,
                stats=self.stats,
                outputs=self.outputs,
                faults=self.faults,
                topic_serdes=self._topic_serdes,
            )
            stores.committed_offsets = tables.committed_offsets
            stores.attach(ctx)
            stores.wake = keeper.wake
            self.committer.stores = stores
            self.rebalance.stores = stores
            self.committer.restore_again = self.rebalance.restore_again
            if not self.global_specs:
                # ctx.store() straight to the manager, or to its open views: a call
                # or two per record fewer.
                ctx._stores = stores.get
                ctx._views = stores.views
        stop.check()
        if isinstance(self.hooks, AsyncHooks):
            self.hooks.setup()
            stop.check()
        # Start-up waits until every global table caught up with its topic.
        tables.start_globals(
            stop, admin=admin, stats=self.stats, app_serdes=(self._key_serde, self._value_serde)
        )
        stop.check()
        self._subscribe()
        log.info(
            "started %s (%s, transactional.id=%s) on %s",
            config.application_id,
            self.guarantee.name,
            config.transactional_id if self.guarantee.transactional else "-",
            ",".join(config.input_topics),
        )

    def _start_async(self, ctx: Context) -> None:
        """An async processor: its runner (the records in flight) and its hooks as calls."""
        config = self.config
        runner = AsyncRunner(
            self.processor,
            ctx=ctx,
            records=self.records,
            timing=self.timing,
            stats=self.stats,
            max_in_flight=config.max_in_flight,
            record_timeout_s=config.record_timeout_ms / 1000.0,
            stop=self.stop_signal,
            guarantee=self.guarantee,
            transaction_timeout_s=config.transaction_timeout_ms / 1000.0,
        )
        self.runner = runner
        self.hooks = AsyncHooks(self.processor, runner.run, runner.close)
        self.rebalance.processor = self.hooks
        self.committer.settle = runner.settle
        self.committer.reset = runner.reset

    def _subscribe(self) -> Consumer:
        """A new group consumer, subscribed with the rebalance listener, handed to the parts."""
        settings = self.tables.consumer_settings(self.config.consumer_settings())
        consumer = Consumer({**settings, "logger": self._kafka_log})
        self.consumer = consumer
        self.committer.consumer = consumer
        self.rebalance.consumer = consumer
        self.tables.attach(consumer, self.committer.stores)
        consumer.subscribe(
            list(self.config.input_topics),
            on_assign=self.rebalance.on_assign,
            on_revoke=self.rebalance.on_revoke,
            on_lost=self.rebalance.on_lost,
        )
        return consumer

    def _renew_consumer(self, error: KafkaError) -> Consumer:
        """The consumer failed fatally: abort the batch, release every partition, join again.

        A fatal consumer never recovers by itself (for example a static member
        falsely fenced "by another consumer with the same group.instance.id"
        while the group coordinator moved in a broker bounce); carrying on with
        it would process nothing, silently. A real second instance with the same
        ids is fenced by the transactional id anyway, so rejoining is safe. Each
        renewal counts towards ``max_aborts_without_progress``.
        """
        log.warning(
            "the consumer failed fatally (%s): aborting the open batch, releasing its "
            "partitions and joining the group again with a new consumer",
            error_name(error),
        )
        self.stats.consumer_renewals += 1
        committer = self.committer
        assignment = self.assignment
        assignment.leaving.update(assignment.assigned)  # never seek the failed consumer
        if committer.open:
            committer.abort("consumer_failed", f"the consumer failed: {error_name(error)}")
        else:
            committer.budget.aborted(f"consumer_failed: {error_name(error)}", counted=True)
        self.rebalance.release_all()
        old = self.consumer
        if old is not None:
            try:
                old.close()
            except (KafkaException, RuntimeError) as exc:
                log.warning("closing the failed consumer: %s", exc)
        return self._subscribe()

    def _shutdown(self, error: BaseException | None) -> None:
        """Abort if the run failed, then close everything; never mask ``error``."""
        self.stop_signal.set()  # bounds every retry from here on by shutdown_timeout_s
        self.stats.state = "stopping"
        if error is not None:
            # BEFORE the consumer closes: its revoke callback must find nothing to commit.
            self.committer.abandon()
        steps: list[tuple[str, Callable[[], object]]] = []
        consumer = self.consumer
        if consumer is not None:
            steps.append(
                ("closing the consumer", lambda: self._bounded("consumer", consumer.close))
            )
        steps.append(
            ("closing the producer", lambda: self._bounded("producer", self._close_producer))
        )
        stores = self.committer.stores
        if stores is not None:
            steps.append(("closing the stores", stores.close_all))
        steps.append(("closing the global tables", self.tables.close))
        steps.append((f"{type(self.processor).__name__}.close()", self.hooks.close))
        first: BaseException | None = None
        for what, step in steps:
            try:
                step()
            except Exception as exc:
                if error is None and first is None:
                    first = exc
                else:
                    log.warning("%s failed: %s", what, exc)
        self.stats.state = "failed" if error is not None or first is not None else "stopped"
        if first is not None:
            raise first

    def _serve_admin(self, now: float) -> None:
        """Serve the long-lived admin client's queued log lines and error events.

        confluent-kafka delivers them only from ``poll()``; unserved, they would
        pile up in memory through every broker disconnect of a long run.
        """
        self._admin_served_at = now
        if self._admin is not None:
            self._admin.poll(0)

    def _close_producer(self) -> None:
        remaining = self.guarantee.close(self.stop_signal.remaining(self.config.shutdown_timeout_s))
        if remaining:
            log.warning("%d produced records were not delivered at shutdown", remaining)
        self.guarantee.destroy()

    def _bounded(self, client: str, close: Callable[[], object]) -> None:
        """Run a client's close on a helper thread and wait for it, but not forever.

        By the time the clients close, the transaction is committed or aborted:
        nothing that matters waits on them. librdkafka can still block in a close
        (a consumer retrying its coordinator query after a broker bounce,
        librdkafka#3740); the process must exit all the same, leaving the group
        to the session timeout. Waits for what is left of ``shutdown_timeout_s``,
        and at least :data:`_CLOSE_FLOOR_S`.
        """
        seconds = max(_CLOSE_FLOOR_S, self.stop_signal.remaining(self.config.shutdown_timeout_s))
        failure: list[BaseException] = []

        def run() -> None:
            try:
                self.faults.closing(client)
                close()
            except BaseException as exc:  # handed to the waiting thread
                failure.append(exc)

        worker = threading.Thread(target=run, name=f"eos-close-{client}", daemon=True)
        worker.start()
        worker.join(seconds)
        if worker.is_alive():
            log.error(
                "closing the %s did not finish within %.0f s; going on without it (the "
                "transaction is already committed or aborted; the group notices by the "
                "session timeout)",
                client,
                seconds,
            )
            return
        if failure:
            raise failure[0]

    # ------------------------------------------------------------------ the loop

    def _loop(self) -> None:
        consumer = self.consumer
        if consumer is None:
            raise RuntimeError("engine not started")
        stop = self.stop_signal
        committer = self.committer
        rebalance = self.rebalance
        batch = self.batch
        interval = self.config.commit_interval_ms / 1000.0
        max_batch = self.config.max_batch_records
        transactional = self.guarantee.transactional
        keeper = self.time
        if keeper is None:
            raise RuntimeError("engine not started")
        tables = self.tables
        order = tables.order
        runner = self.runner
        stats = self.stats
        while not stop.is_set():
            # Liveness (/healthz) reads this: one stamp per turn, never per record.
            stats.loop_turned = time.monotonic()
            committer.wait_backoff()
            if stop.is_set():
                break
            if rebalance.restoring:
                # Restore between transactions: however long a step takes, no
                # transaction is open while it runs.
                if committer.open:
                    committer.commit()
                rebalance.restore_step()
            limit = max(1, min(_MAX_CONSUME, max_batch - batch.records))
            if runner is not None:
                limit = max(1, min(limit, runner.room))
            try:
                if runner is not None and runner.size:
                    # Records in flight: take what is fetched, up to the room left (none
                    # when full: consumption pauses), without waiting; then run them.
                    room = runner.room
                    messages = consumer.consume(limit, 0) if room > 0 else []
                elif committer.open:
                    # A batch is open: fill it until the commit (or a wall-clock timer) is due.
                    timeout = max(0.0, batch.started + interval - time.monotonic())
                    if keeper.wall_due < NEVER:
                        timeout = min(timeout, max(0.0, keeper.wall_due / 1000 - time.time()))
                    messages = consumer.consume(limit, timeout)
                else:
                    # Idle: start on the first record that arrives, with whatever else
                    # is already fetched, instead of waiting for a full batch.
                    timeout = 0.0 if rebalance.restoring else _IDLE_POLL_S
                    messages = consumer.consume(1, timeout)
                    if messages and limit > 1:
                        messages += consumer.consume(limit - 1, 0)
                if order is not None:
                    messages = order.arrange(messages)
                if messages:
                    self.guarantee.before_processing(messages, consumer)
                    self._process(messages)
                if runner is not None and runner.size:
                    due = batch.started + interval - time.monotonic()
                    if keeper.wall_due < NEVER:
                        due = min(due, keeper.wall_due / 1000 - time.time())
                    runner.step(max(0.0, due))
                tables.poll()
                if keeper.wall_due <= wall_clock_ms():
                    # Due even when no record arrives: the loop turns at least every 100 ms.
                    if runner is not None:
                        runner.drain()  # timers see every earlier record finished
                    self.timing.fire_wall()
            except Rewound:
                continue
            except ConsumerFailed as failed:
                consumer = self._renew_consumer(failed.error)
                continue
            except KafkaException as exc:
                if not _fatal_consumer_error(exc.args[0]):
                    raise
                consumer = self._renew_consumer(exc.args[0])
                continue
            committed = False
            if committer.open and (
                batch.records >= max_batch or time.monotonic() - batch.started >= interval
            ):
                committed = committer.commit()
            elif not transactional:
                self.outputs.poll()
            now = time.monotonic()
            if committed:
                tables.purge(self._admin, now)
            rebalance.refresh_lag(now, force=committed)
            if now >= self._admin_served_at + _ADMIN_SERVE_S:
                self._serve_admin(now)
        if committer.open:
            committer.commit()

    def _process(self, messages: Sequence[Any]) -> None:
        """Process ``messages`` in order. Raises Rewound after an abort."""
        if (
            self.batch_runs is not None
            and self.runner is None
            and not (self.time is not None and self.time.active)
            and not self.tables.sources
            and not self.poison.records
            and not self.outputs.careful
        ):
            self.batch_runs.process(messages, self.ctx)
        else:
            self._process_records(messages)

    def _process_records(self, messages: Sequence[Any]) -> None:
        """Process ``messages`` one ``process`` call per record. Raises Rewound after
        an abort."""
        ctx = self.ctx
        if ctx is None:
            raise RuntimeError("engine not started")
        process = self.processor.process
        runner = self.runner
        if runner is not None:
            runner.careful = bool(self.outputs.careful)
        kdes = self._kdes
        vdes = self._vdes
        topic_des = self._topic_des
        default_des = (kdes, vdes)
        batch = self.batch
        positions = batch.positions
        poison = self.poison.records
        records = self.records
        ctx._produce = self.outputs.produce_for_batch()
        batch.starting(ctx.sends, self.guarantee.in_transaction)
        # Time costs nothing per record unless the processor uses it.
        keeper = self.time
        timing = self.timing
        timed = keeper is not None and keeper.active
        stream_times = keeper.stream if keeper is not None else {}
        dues = keeper.due if keeper is not None else {}
        # Tables: their topics' records update the store, they are not processed.
        tables = self.tables.sources
        update_table = self.tables.update
        table: str | None = None
        # Per partition, once per polled batch: may its records be processed (it
        # is assigned and not restoring), and, on its first record, open the
        # transaction and note where the partition started. Nothing in this loop
        # changes the assignment, the transaction or the batch without raising,
        # so the answer holds for the whole polled batch.
        admitted: dict[TP, bool] = {}
        # Records come in runs of one partition: the partition's checks and its
        # position update happen once per run, not once per record.
        run_tp: TP | None = None
        run_topic = None
        run_partition = -1
        run_next = -1
        ok = False
        processed = 0
        # Offsets below what this instance already processed (in this batch or this
        # run) or committed are never processed again, whatever the consumer hands out:
        # ``run_next`` starts a run at that floor and only moves up.
        committed = self.assignment.committed
        floor = -1
        try:
            for msg in messages:
                error = msg.error()
                if error is not None:
                    self._consumer_error(msg, error)
                    continue
                topic = msg.topic()
                partition = msg.partition()
                offset = msg.offset()
                if partition != run_partition or topic != run_topic:
                    if ok and run_next > floor:
                        positions[run_tp] = run_next  # type: ignore[index]
                    run_tp = (topic, partition)
                    run_topic = topic
                    run_partition = partition
                    if topic_des:
                        # Per run of one partition, not per record.
                        kdes, vdes = topic_des.get(topic, default_des)
                    if tables:
                        table = tables.get(topic)
                    floor = max(positions.get(run_tp, -1), committed.get(run_tp, -1))
                    run_next = floor
                    if offset < floor:
                        redelivered(run_tp, offset, floor)
                    ok = admitted.get(run_tp)  # type: ignore[assignment]
                    if ok is None:
                        ok = admitted[run_tp] = self._admit(run_tp, max(offset, floor))
                if not ok:
                    self.assignment.held_back(run_tp, offset)  # type: ignore[arg-type]
                    continue
                if offset < run_next:
                    if offset >= floor:
                        # Handed out again inside the run (a fetch reset of librdkafka's
                        # own): the run so far counts, and its end is the new floor.
                        redelivered(run_tp, offset, run_next)  # type: ignore[arg-type]
                        positions[run_tp] = floor = run_next  # type: ignore[index]
                    continue
                if poison and (topic, partition, offset) in poison:
                    # Kept until a commit moves past it: the transaction that applies the policy
                    # may itself abort (e.g. OUT_OF_ORDER_SEQUENCE_NUMBER) and replay.
                    records.apply_policy(
                        msg, poison[(topic, partition, offset)], _from(messages, msg)
                    )
                    run_next = offset + 1
                    processed += 1
                    continue
                raw_key = msg.key()
                raw_value = msg.value()
                try:
                    key = raw_key if kdes is None else kdes(raw_key)
                    value = raw_value if vdes is None else vdes(raw_value)
                except Exception as exc:
                    records.apply_policy(
                        msg, decode_error(exc, raw_key, kdes, topic), _from(messages, msg)
                    )
                    run_next = offset + 1
                    processed += 1
                    continue
                if table is not None:
                    if runner is not None and runner.size:
                        # The records before it read the table as it was.
                        runner.drain(_from(messages, msg))
                    update_table(table, partition, raw_key, raw_value)
                    run_next = offset + 1
                    processed += 1
                    continue
                # tuple.__new__ directly: NamedTuple's own __new__ is a Python
                # function, a frame per record for the same object.
                record = _new_record(
                    Record,
                    (key, value, topic, partition, offset, msg.timestamp()[1], msg.headers()),
                )
                if runner is not None:
                    # Admitted: it runs on the loop (positions move now, as for a record
                    # processed; the commit waits until it finished).
                    if timed:
                        if record[5] > stream_times[partition]:
                            stream_times[partition] = record[5]
                        runner.submit(record, msg, stream_times[partition])
                        if stream_times[partition] >= dues[partition]:
                            runner.drain(_from(messages, msg)[1:])
                            timing.fire(partition, _from(messages, msg)[1:])
                    else:
                        runner.submit(record, msg, None)
                    run_next = offset + 1
                    processed += 1
                    continue
                ctx.record = record
                before = ctx.sends
                if timed:
                    timing.current = msg
                    if record[5] > stream_times[partition]:
                        stream_times[partition] = record[5]
                try:
                    process(record, ctx)
                except BaseException as exc:
                    if isinstance(exc, Rewound):
                        raise
                    records.process_failed(msg, exc, ctx.sends != before, _from(messages, msg))
                run_next = offset + 1
                processed += 1
                if timed and stream_times[partition] >= dues[partition]:
                    timing.fire(partition, _from(messages, msg)[1:])
        finally:
            ctx.record = None
        # Only on normal completion: after an abort the batch was cleared.
        if ok and run_next > floor:
            positions[run_tp] = run_next  # type: ignore[index]
        batch.records += processed
        if processed:
            self.stats.record_batch(
                processed, messages[0].timestamp()[1], messages[-1].timestamp()[1]
            )

    def _admit(self, tp: TP, offset: int) -> bool:
        """First record of ``tp`` in a polled batch: False if it may not be processed
        now; else open the transaction if none is, and note ``offset`` as where
        ``tp`` rewinds to."""
        if not self.assignment.ready(tp):
            return False
        self.guarantee.begin()
        if tp not in self.batch.first_seen:
            self.batch.first_seen[tp] = offset
        return True

    def _consumer_error(self, msg: Any, error: KafkaError) -> None:
        """An error event from the consumer: fatal and configuration errors stop the run."""
        if error.code() == KafkaError._PARTITION_EOF:
            return
        if _fatal_consumer_error(error):
            raise ConsumerFailed(error)
        if cause_of(error) is Cause.CONFIG:
            raise ConfigError(_consumer_denied(self.config, msg.topic(), error), "input.topics")
        log.warning("consumer error: %s", error)

    # ------------------------------------------------------------------ context hooks

    def _drain(self) -> None:
        self.outputs.poll(0.05)

    def _store_lookup(self, name: str, partition: int) -> Any:
        stores = self.committer.stores
        if stores is not None:
            try:
                return stores.get(name, partition)  # the per-record path: nothing in front
            except ConfigError:
                if not self.tables.is_global(name):
                    raise
        if self.tables.is_global(name):
            return self.tables.view(name)
        raise undeclared_store(name, type(self.processor).__name__, [])


class ConsumerFailed(Exception):
    """Internal: the consumer reported a fatal error; it must be replaced."""

    def __init__(self, error: KafkaError) -> None:
        super().__init__(str(error))
        self.error = error


def _fatal_consumer_error(error: object) -> bool:
    return isinstance(error, KafkaError) and (error.fatal() or error.code() == KafkaError._FATAL)


def _consumer_denied(config: Config, topic: str | None, error: KafkaError) -> str:
    """What the consumer was refused, and the fix (names the resource, never a secret)."""
    name = error_name(error)
    group = config.application_id
    code = error.code()
    if code == KafkaError.GROUP_AUTHORIZATION_FAILED:
        return (
            f"joining consumer group {group!r} was denied ({name}); grant the application's "
            f"principal READ on Group:{group}"
        )
    where = f"topic {topic!r}" if topic else f"the input topics {', '.join(config.input_topics)}"
    if code == KafkaError.TOPIC_AUTHORIZATION_FAILED:
        return f"reading {where} was denied ({name}); grant READ on Topic:{topic or '<input>'}"
    if code in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC):
        return f"consuming {where} failed: it does not exist ({name})"
    return f"consuming {where} as group {group!r} failed: {name}"


def _from(messages: Sequence[Any], msg: Any) -> Sequence[Any]:
    """``msg`` and what follows it in ``messages`` (only computed on a failure)."""
    return messages[messages.index(msg) :]


Deserialize = Callable[[bytes | None], object]


def _fast_deserializer(serde: Serde) -> Deserialize | None:
    return None if isinstance(serde, BytesSerde) else serde.deserialize


def _cooperative(config: Config) -> bool:
    """Whether the group assigns incrementally (cooperative-sticky or KIP-848)."""
    settings = config.consumer_settings()
    strategy = str(settings.get("partition.assignment.strategy", ""))
    protocol = str(settings.get("group.protocol", "classic"))
    return protocol.lower() == "consumer" or strategy.split(",")[0].strip() == "cooperative-sticky"
