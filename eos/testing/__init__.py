"""Testing aids.

- :class:`TestDriver`: run a Processor in-process, no broker (unit tests).
- :mod:`eos.testing.kafka`: a real local Kafka started from Maven jars.
- :mod:`eos.testing.helpers`, :mod:`eos.testing.process`,
  :mod:`eos.testing.verify`: topics, child processes to kill, the verifier.
"""

from __future__ import annotations

from eos.testing.driver import Output, TestDriver

__all__ = ["Output", "TestDriver"]
