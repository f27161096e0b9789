"""A processor for the `eos run` SIGTERM tests: forwards each record to ``<input>-out``.

Importing this module takes ``TERM_APP_IMPORT_SECONDS`` (a test setting read here, in a
test module): it stands for an application whose import is slow (loading a model, a
large configuration), the window in which a SIGTERM must already be a clean stop.
"""

from __future__ import annotations

import os
import time

import eos

time.sleep(float(os.environ.get("TERM_APP_IMPORT_SECONDS", "0")))


class Forward(eos.Processor):
    """Sends each record's value, upper-cased, to ``<its topic>-out``."""

    def process(self, record: eos.Record, ctx: eos.Context) -> None:
        ctx.send(f"{record.topic}-out", record.value.upper(), key=record.key)  # type: ignore[union-attr]
