"""The health endpoints: what /healthz and /ready answer, and the stamps they read."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from eos.health import (
    HEALTHZ_PATH,
    LIVENESS_LOOP_BOUND_S,
    READINESS_COMMIT_BOUND_S,
    READY_PATH,
    liveness,
    readiness,
)
from eos.metrics import register_metrics
from eos.stats import EngineStats, HealthView, RunState

NOW = 10_000.0


def view(
    state: RunState = "running",
    *,
    loop_age: float | None = 0.1,
    assigned: int = 2,
    restoring: int = 0,
    uncommitted_for: float | None = None,
) -> HealthView:
    return HealthView(
        state=state,
        loop_turned=None if loop_age is None else NOW - loop_age,
        assigned=assigned,
        restoring=restoring,
        uncommitted_since=None if uncommitted_for is None else NOW - uncommitted_for,
    )


def get(url: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, dict(error.headers), error.read()


@pytest.mark.parametrize(
    ("state", "loop_age", "ok"),
    [
        ("created", None, True),
        ("starting", None, True),
        ("starting", 10 * LIVENESS_LOOP_BOUND_S, True),  # a previous run's stale stamp
        ("running", None, True),
        ("running", 0.1, True),
        ("running", LIVENESS_LOOP_BOUND_S, True),
        ("running", LIVENESS_LOOP_BOUND_S + 0.5, False),
        ("restoring", 1.0, True),
        ("restoring", LIVENESS_LOOP_BOUND_S + 1, False),
        ("stopping", 1.0, True),
        ("stopping", LIVENESS_LOOP_BOUND_S + 1, False),
        ("failed", 0.1, False),
        ("stopped", 0.1, False),
    ],
)
def test_liveness_is_the_loop_turning_within_the_bound(
    state: RunState, loop_age: float | None, ok: bool
) -> None:
    """/healthz is 200 before the loop starts and while its last turn is within the bound,
    503 past the bound or once the application failed or stopped."""
    check = liveness(view(state, loop_age=loop_age), NOW)
    assert check.ok is ok
    assert check.status == (200 if ok else 503)
    assert check.body["status"] == ("ok" if ok else "failing")
    assert check.body["state"] == state
    assert check.body["bound_s"] == LIVENESS_LOOP_BOUND_S
    assert check.body["loop_age_s"] == loop_age
    assert isinstance(check.body["reason"], str) and check.body["reason"]


@pytest.mark.parametrize(
    ("health", "ok", "reason"),
    [
        (view(assigned=3), True, "3 partitions assigned"),
        (view(assigned=0), True, "idle"),
        (view(uncommitted_for=1.0), True, "committing"),
        (view(uncommitted_for=READINESS_COMMIT_BOUND_S + 1), False, "not committed"),
        (view("restoring", assigned=4, restoring=1), False, "restoring the stores of 1 of 4"),
        (view("starting", loop_age=None), False, "starting"),
        (view("created", loop_age=None), False, "starting"),
        (view("stopping"), False, "stopping"),
        (view("stopped"), False, "stopped"),
        (view("failed"), False, "failed"),
        (view(loop_age=LIVENESS_LOOP_BOUND_S + 1), False, "has not turned"),
    ],
)
def test_readiness_is_running_restored_and_committing(
    health: HealthView, ok: bool, reason: str
) -> None:
    """/ready is 200 only when running (restores done), live, and nothing consumed has
    waited past the commit bound; an idle instance with no partition is ready."""
    check = readiness(health, NOW)
    assert check.ok is ok
    assert check.status == (200 if ok else 503)
    assert check.body["status"] == ("ready" if ok else "not_ready")
    assert reason in str(check.body["reason"])
    assert check.body["bound_s"] == READINESS_COMMIT_BOUND_S
    assert check.body["assigned"] == health.assigned
    assert check.body["restoring"] == health.restoring


def test_an_idle_instance_stays_ready_however_old_its_last_commit() -> None:
    """Readiness judges consumed-but-uncommitted records, not the age of the last commit:
    assigned partitions that receive nothing never commit, and stay ready."""
    stats = EngineStats("idle", clock=lambda: 0.0)  # last commit at the epoch: decades ago
    stats.record_commit(10, 0.01)
    stats.state = "running"
    stats.assigned = [("in", 0), ("in", 1)]
    stats.loop_turned = time.monotonic()
    assert readiness(stats.health(), time.monotonic()).ok


def test_uncommitted_clock_starts_at_the_first_batch_and_survives_aborts() -> None:
    """The first batch after a commit starts the clock; an abort (a replay follows) keeps it;
    a commit or a release of partitions clears it."""
    stats = EngineStats("app")
    assert stats.health().uncommitted_since is None
    before = time.monotonic()
    stats.record_batch(5, 1, 2)
    since = stats.health().uncommitted_since
    assert since is not None and before <= since <= time.monotonic()
    stats.record_batch(5, 3, 4)
    stats.record_abort("outage")
    stats.record_batch(10, 1, 4)  # the replay
    assert stats.health().uncommitted_since == since
    stats.record_commit(10, 0.01)
    assert stats.health().uncommitted_since is None
    stats.record_batch(1, 5, 5)
    stats.record_abort("partitions_lost")
    stats.drop_partitions([("in", 0)])
    assert stats.health().uncommitted_since is None


def test_health_view_copies_the_state_and_counts() -> None:
    """EngineStats.health() reports the state, the loop stamp and the partition counts."""
    stats = EngineStats("app")
    stats.state = "restoring"
    stats.loop_turned = 123.0
    stats.assigned = [("in", 0), ("in", 1), ("in", 2)]
    stats.restoring = [("in", 2)]
    assert stats.health() == HealthView("restoring", 123.0, 3, 1, None)


def test_endpoints_answer_json_next_to_metrics() -> None:
    """The metrics server answers /healthz and /ready with 200 or 503 and a JSON reason,
    HEAD without a body, and still serves /metrics."""
    stats = EngineStats("web")
    with register_metrics(stats, port=0) as handle:
        base = f"http://127.0.0.1:{handle.port}"

        status, headers, body = get(base + HEALTHZ_PATH)
        assert (status, json.loads(body)["state"]) == (200, "created")
        assert headers["Content-Type"] == "application/json"
        assert headers["Cache-Control"] == "no-store"
        status, _, body = get(base + READY_PATH)
        assert (status, json.loads(body)["status"]) == (503, "not_ready")

        stats.state = "running"
        stats.assigned = [("in", 0)]
        stats.loop_turned = time.monotonic()
        status, _, body = get(base + READY_PATH)
        ready: dict[str, Any] = json.loads(body)
        assert status == 200, ready
        assert ready["assigned"] == 1 and ready["uncommitted_s"] is None

        stats.loop_turned = time.monotonic() - LIVENESS_LOOP_BOUND_S - 5
        status, _, body = get(base + HEALTHZ_PATH)
        live: dict[str, Any] = json.loads(body)
        assert status == 503
        assert live["loop_age_s"] > LIVENESS_LOOP_BOUND_S
        assert "has not turned" in live["reason"]
        assert get(base + READY_PATH)[0] == 503
        status, headers, body = get(base + HEALTHZ_PATH, method="HEAD")
        assert (status, body) == (503, b"")
        assert int(headers["Content-Length"]) > 0

        status, _, body = get(base + "/metrics")
        assert status == 200
        assert b'eos_app_state{application_id="web",state="running"} 1.0' in body


def test_endpoints_bind_ipv6_addresses() -> None:
    """An IPv6 bind address (``::1``) serves the health endpoints too."""
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this host")
    try:
        probe = socket.socket(socket.AF_INET6)
        probe.bind(("::1", 0))
        probe.close()
    except OSError:
        pytest.skip("::1 cannot be bound on this host")
    with register_metrics(EngineStats("v6"), port=0, bind_address="::1") as handle:
        assert handle.url == f"http://[::1]:{handle.port}/metrics"
        assert get(f"http://[::1]:{handle.port}{HEALTHZ_PATH}")[0] == 200
