"""Exactly-once sinks: the input's effects and positions committed outside Kafka.

A sink ends a pipeline in a system with transactions of its own. Kafka's
transactions end at Kafka's edge, so a sink does not use them: each batch is
one transaction of the target system that holds both the batch's effects and
the input positions it consumed up to, and a per-partition epoch in the same
system fences a paused instance whose partitions moved on ("storing offsets
outside Kafka", as the ``KafkaConsumer`` javadoc describes it).

- :mod:`eos.sinks.postgres`: :class:`~eos.sinks.postgres.PostgresProcessor`,
  into PostgreSQL (psycopg 3, the extra ``eos-kafka[postgres]``).

A sink is given to :class:`eos.Application` as its ``processor``; the
application then runs the sink's own engine instead of the Kafka
transactional one. See ``docs/sinks.md``.
"""

from __future__ import annotations

from eos.sinks.base import Sink

__all__ = ["Sink"]
