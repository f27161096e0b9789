"""Clicks per user session, exactly once: one final record per session.

What it shows: session windows in the DSL. Click events arrive keyed by user,
as JSON values (``{"page": "/cart"}``; the value is not read). A session is
a run of one user's clicks with no gap longer than 30 s between two of them;
``group_by_key().windowed_by(eos.SessionWindows(inactivity_gap_ms=30_000,
grace_ms=5_000)).count(store="click-sessions")`` keeps each open session's
click count in a window store, and ``.final()`` sends ONE record per session
to the output topic when it closes::

    key "alice"   value {"start": 1700000000000, "end": 1700000095000, "clicks": 7}

``start`` and ``end`` are the timestamps of the session's first and last
clicks (both inclusive). A click that falls within 30 s of two sessions
merges them into one (its count is the sum of both plus one); only the
merged session is emitted. A session closes when the partition's stream time
(the largest click timestamp seen on it) passes ``end + 30 s + 5 s``: a click
up to 5 s late still extends or merges a session; a click whose session
would be closed already (more than 35 s behind stream time, with no open
session within 30 s of it) is dropped and counted in
``eos_late_records_total``. The session's record, its deletion from the
store and the input offsets commit in one transaction, so each session is
emitted exactly once, across crashes and rebalances (docs/time.md).

Run it (the topics must exist)::

    export EOS_BOOTSTRAP_SERVERS=127.0.0.1:9092
    eos run examples.sessions:app
    eos run examples.sessions:builder --config sessions.properties

(the properties file needs ``application.id`` and ``bootstrap.servers``; the
input topic comes from the builder, the serdes from its ``stream()`` and
``to()``.)

Settings come from the environment: ``EOS_BOOTSTRAP_SERVERS``,
``SESSIONS_INPUT`` (default ``clicks``), ``SESSIONS_OUTPUT`` (default
``click-sessions``), ``SESSIONS_APPLICATION_ID`` (default ``click-sessions``)
and ``SESSIONS_STATE_DIR`` (default ``./state``). ``python examples/sessions.py``
runs ``app`` too.
"""

from __future__ import annotations

import logging
import os

import eos

INPUT = os.environ.get("SESSIONS_INPUT", "clicks")
OUTPUT = os.environ.get("SESSIONS_OUTPUT", "click-sessions")
STORE = "click-sessions"
WINDOWS = eos.SessionWindows(inactivity_gap_ms=30_000, grace_ms=5_000)


def session_record(session: eos.Windowed[str], clicks: int) -> tuple[str, dict[str, int]]:
    """The output record of a closed session: keyed by user, its bounds and clicks."""
    return session.key, {"start": session.start, "end": session.end, "clicks": clicks}


def build(clicks: str = INPUT, output: str = OUTPUT) -> eos.StreamBuilder:
    """Clicks (string keys, JSON values) in; one JSON record per user session out."""
    builder = eos.StreamBuilder()
    sessions = (
        builder.stream(clicks, key_serde="string", value_serde="json")
        .group_by_key()
        .windowed_by(WINDOWS)
        .count(store=STORE)
        .final()
    )
    sessions.to_stream().map(session_record).to(output, key_serde="string", value_serde="json")
    return builder


def application(builder: eos.StreamBuilder) -> eos.Application:
    """The application running ``builder`` (its input topic: the builder's)."""
    return eos.Application(
        application_id=os.environ.get("SESSIONS_APPLICATION_ID", "click-sessions"),
        bootstrap_servers=os.environ.get("EOS_BOOTSTRAP_SERVERS", "localhost:9092"),
        processor=builder.build(),
        key_serde="string",
        value_serde="json",
        state_dir=os.environ.get("SESSIONS_STATE_DIR", "./state"),
    )


builder = build()
app = application(builder)


if __name__ == "__main__":
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"
    )
    app.run()
