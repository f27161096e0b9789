"""Testing aids: a real local Kafka (:mod:`eos.testing.kafka`) and the broker-free TestDriver."""

from __future__ import annotations
