"""Health endpoints of the metrics server: ``/healthz`` (liveness) and ``/ready`` (readiness).

:func:`eos.metrics.register_metrics` serves them in front of Prometheus's
``/metrics`` when it serves HTTP (``metrics_port``). Each answers 200 or 503
with a small JSON body saying why; see ``docs/monitoring.md`` and
``docs/kubernetes.md`` for the probes that use them.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Final
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from eos.stats import EngineStats, HealthView

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = [
    "HEALTHZ_PATH",
    "LIVENESS_LOOP_BOUND_S",
    "READINESS_COMMIT_BOUND_S",
    "READY_PATH",
    "HealthCheck",
    "liveness",
    "readiness",
    "serve",
    "with_health",
]


HEALTHZ_PATH: Final = "/healthz"
"""Liveness: 200 while the processing loop turns (see :func:`liveness`)."""
READY_PATH: Final = "/ready"
"""Readiness: 200 while running, restored and committing (see :func:`readiness`)."""

LIVENESS_LOOP_BOUND_S: Final = 180.0
"""Longest time between two turns of the processing loop that ``/healthz`` accepts.

One turn consumes, processes and, when due, commits. At the default settings
its longest legitimate duration is about 135 s: a commit caught by a broker
failure retries ``send_offsets_to_transaction`` for up to
``transaction_timeout_ms`` (60 s) plus 5 s, then ``commit_transaction`` waits
for the outputs' delivery, which librdkafka gives up after
``transaction.timeout.ms`` (60 s); the backoff after an abort adds up to 10 s;
a restore step (0.2 s) and the rebalance callbacks (which commit the same way)
run inside a turn. 180 s leaves room for a slow batch of user code. A commit
held up by a whole-cluster outage longer than that fails the check and
Kubernetes restarts the instance, which is safe: the new incarnation fences
the old one, whose transaction aborts. With a larger ``transaction_timeout_ms``,
lengthen the probe (its ``failureThreshold`` times ``periodSeconds`` comes on
top of this bound).
"""

READINESS_COMMIT_BOUND_S: Final = 60.0
"""Longest time consumed records may wait for their commit before ``/ready`` says 503.

The default ``transaction_timeout_ms``: the broker aborts a transaction open
longer, so records consumed that long ago and still not committed mean the
instance is not making progress (an outage, an abort storm, a stuck commit).
An instance with nothing consumed and uncommitted (idle, or caught up) is ready
however long ago its last commit was.
"""


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """The answer of ``/healthz`` or ``/ready``.

    Attributes:
        ok: Healthy (liveness) or ready (readiness).
        body: The JSON object the endpoint sends.
    """

    ok: bool
    body: Mapping[str, str | int | float | None]

    @property
    def status(self) -> int:
        """The HTTP status: 200 when ``ok``, 503 otherwise."""
        return 200 if self.ok else 503


def liveness(view: HealthView, now: float) -> HealthCheck:
    """Judge liveness: is the processing loop turning?

    - ``created``, ``starting``: live (start-up can be long; a restore of
      global tables is part of it, and readiness covers it).
    - ``running``, ``restoring``, ``stopping``: live while the loop turned at
      most :data:`LIVENESS_LOOP_BOUND_S` ago (or has not turned yet).
    - ``failed``, ``stopped``: not live; the application will not process again.

    Args:
        view: The application's health view (:meth:`~eos.stats.EngineStats.health`).
        now: ``time.monotonic()`` now.

    Returns:
        The check; its body has ``status`` (``ok`` or ``failing``), ``state``,
        ``loop_age_s`` (seconds since the loop last turned, or null),
        ``bound_s`` and ``reason``.
    """
    age = _age(view.loop_turned, now)
    bound = LIVENESS_LOOP_BOUND_S
    ok = False
    if view.state == "failed":
        reason = "the application failed: it processes nothing more (see its log)"
    elif view.state == "stopped":
        reason = "the application stopped"
    elif view.state in ("created", "starting"):
        ok, reason = True, "starting (restores are judged by /ready)"
    elif age is None:
        ok, reason = True, "the processing loop has not turned yet"
    elif age > bound:
        reason = f"the processing loop has not turned for {age:.1f} s (bound {bound:.0f} s)"
    else:
        ok, reason = True, f"the processing loop turned {age:.2f} s ago"
    body = {
        "status": "ok" if ok else "failing",
        "state": view.state,
        "loop_age_s": age,
        "bound_s": bound,
        "reason": reason,
    }
    return HealthCheck(ok, body)


def readiness(view: HealthView, now: float) -> HealthCheck:
    """Judge readiness: running, restored, live, and committing what it consumes.

    Ready when the state is ``running`` (not ``created``, ``starting``,
    ``restoring``, ``stopping``, ``stopped`` or ``failed``: ``restoring``
    means some assigned partition still waits for its stores), the loop is
    live (:func:`liveness`), and no consumed record has waited more than
    :data:`READINESS_COMMIT_BOUND_S` for its commit. An instance with no
    partition assigned (an idle extra instance) is ready.

    Args:
        view: The application's health view (:meth:`~eos.stats.EngineStats.health`).
        now: ``time.monotonic()`` now.

    Returns:
        The check; its body has ``status`` (``ready`` or ``not_ready``),
        ``state``, ``assigned``, ``restoring`` (partitions), ``uncommitted_s``
        (how long the oldest uncommitted consumed record has waited, or null),
        ``bound_s`` and ``reason``.
    """
    waited = _age(view.uncommitted_since, now)
    bound = READINESS_COMMIT_BOUND_S
    live = liveness(view, now)
    ok = False
    if view.state == "restoring":
        reason = f"restoring the stores of {view.restoring} of {view.assigned} partitions"
    elif view.state in ("created", "starting"):
        reason = "starting: not consuming yet"
    elif view.state != "running":
        reason = f"the application is {view.state}"
    elif not live.ok:
        reason = str(live.body["reason"])
    elif waited is not None and waited > bound:
        reason = f"records consumed {waited:.1f} s ago are not committed yet (bound {bound:.0f} s)"
    elif view.assigned == 0:
        ok, reason = True, "running; no partition assigned (idle)"
    else:
        plural = "s" if view.assigned > 1 else ""
        ok, reason = True, f"running; {view.assigned} partition{plural} assigned, committing"
    body = {
        "status": "ready" if ok else "not_ready",
        "state": view.state,
        "assigned": view.assigned,
        "restoring": view.restoring,
        "uncommitted_s": waited,
        "bound_s": bound,
        "reason": reason,
    }
    return HealthCheck(ok, body)


def with_health(stats: EngineStats, metrics: WSGIApplication) -> WSGIApplication:
    """``metrics`` with :data:`HEALTHZ_PATH` and :data:`READY_PATH` answered in front of it."""
    checks = {HEALTHZ_PATH: liveness, READY_PATH: readiness}

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        check = checks.get(environ.get("PATH_INFO", ""))
        if check is None:
            return metrics(environ, start_response)
        result = check(stats.health(), time.monotonic())
        payload = json.dumps(result.body).encode()
        start_response(
            "200 OK" if result.ok else "503 Service Unavailable",
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(payload))),
                ("Cache-Control", "no-store"),
            ],
        )
        return [b"" if environ.get("REQUEST_METHOD") == "HEAD" else payload]

    return app


class _QuietHandler(WSGIRequestHandler):
    """No access log line per request (a probe every few seconds would flood stderr)."""

    def log_message(self, format: str, *args: object) -> None:
        return None


def serve(
    app: WSGIApplication, bind_address: str, port: int
) -> tuple[WSGIServer, threading.Thread]:
    """Serve ``app`` on ``bind_address:port`` from a daemon thread (a thread per request).

    Raises:
        OSError: The address does not resolve or cannot be bound.
    """
    family, _, _, _, sockaddr = socket.getaddrinfo(
        bind_address, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True
        address_family = family

    server = make_server(str(sockaddr[0]), port, app, Server, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="eos-metrics", daemon=True)
    thread.start()
    return server, thread


def _age(stamp: float | None, now: float) -> float | None:
    return None if stamp is None else round(max(0.0, now - stamp), 3)
