"""SIGTERM at any moment is a clean stop: while the application is imported, during
start-up, during a store restore, during a commit. Each time the process exits 0 within the
shutdown timeout, and nothing is lost or duplicated (read back with read_committed)."""

from __future__ import annotations

import shutil
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from eos.testing.helpers import (
    committed_offsets,
    create_topic,
    produce,
    read_topic,
    unique_name,
    wait_caught_up,
)
from eos.testing.process import AppProcess
from eos.testing.verify import verify_exactly_once

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

HERE = Path(__file__).resolve().parent
EXAMPLES = HERE.parents[1] / "examples"
FAULT_APP = str(HERE / "fault_app.py")


def _eos_run(tmp_path: Path, bootstrap: str, source: str, app_id: str, **env: str) -> AppProcess:
    """``eos run term_app:Forward --config app.properties`` (unstarted)."""
    props = tmp_path / f"{app_id}.properties"
    props.write_text(
        f"application.id={app_id}\nbootstrap.servers={bootstrap}\ninput.topics={source}\n"
    )
    return AppProcess(
        ["-m", "eos.cli", "run", "term_app:Forward", "--config", str(props)],
        log_path=tmp_path / f"{app_id}.log",
        env=env,
        cwd=HERE,
    )


def _stop(app: AppProcess, *, when_started: bool = False, bound: float = 15.0) -> float:
    """SIGTERM; assert exit 0 within ``bound`` seconds; return the seconds it took."""
    started = time.monotonic()
    code = app.terminate(timeout=60, when_started=when_started)
    took = time.monotonic() - started
    assert code == 0, f"exit {code}:\n{app.log_tail(60)}"
    assert took < bound, f"took {took:.1f}s to stop"
    return took


def test_sigterm_while_the_application_is_imported_exits_0(bootstrap, tmp_path) -> None:
    """`eos run` installs its handler before importing the user's module: a SIGTERM during a
    slow import (3 s here) makes it exit 0 without starting anything."""
    source = create_topic(bootstrap, unique_name("in"), 1)
    create_topic(bootstrap, f"{source}-out", 1)
    app_id = unique_name("term-import")
    produce(bootstrap, source, ((f"k{i}", f"v{i}") for i in range(100)))
    app = _eos_run(tmp_path, bootstrap, source, app_id, TERM_APP_IMPORT_SECONDS="3").start()
    app.wait_for_current_log("eos.runner: loading", 60)
    took = _stop(app)
    print(f"exit 0 {took:.1f}s after SIGTERM during the import")
    assert committed_offsets(bootstrap, app_id, source)[0] < 0
    assert read_topic(bootstrap, f"{source}-out") == []


def test_sigterm_at_any_moment_of_start_up_exits_0_and_loses_nothing(bootstrap, tmp_path) -> None:
    """`eos run` SIGTERMed at moments from 0 to 2 s after it began loading (import, topic
    checks, init_transactions, subscribe, first records): exit 0 every time; a final run
    then finds every input exactly once in the output."""
    source = create_topic(bootstrap, unique_name("in"), 2)
    sink = create_topic(bootstrap, f"{source}-out", 2)
    app_id = unique_name("term-start")
    produce(bootstrap, source, ((f"k{i % 13}", f"v{i:05d}") for i in range(3000)))
    app = _eos_run(tmp_path, bootstrap, source, app_id)
    took = []
    for delay in (0.0, 0.1, 0.25, 0.5, 0.8, 1.2, 2.0):
        app.start().wait_for_current_log("eos.runner: loading", 60)
        time.sleep(delay)  # the moment of the signal, not a synchronization
        took.append(round(_stop(app), 2))
    app.start()
    wait_caught_up(bootstrap, app_id, source, timeout=120)
    took.append(round(_stop(app, when_started=True), 2))
    verdict = verify_exactly_once(
        read_topic(bootstrap, source), read_topic(bootstrap, sink), bytes.upper
    )
    print(f"stop seconds per start={took} {verdict}")
    assert verdict.ok and verdict.inputs == 3000, verdict


def _count_app(tmp_path: Path, bootstrap: str, source: str, sink: str, app_id: str, *faults: str):
    args = [
        "--bootstrap-servers", bootstrap,
        "--input", source,
        "--output", sink,
        "--application-id", app_id,
        "--state-dir", str(tmp_path / "state"),
    ]  # fmt: skip
    prefix = (
        [FAULT_APP, "count_per_key", *faults, "--"]
        if faults
        else [str(EXAMPLES / "count_per_key.py")]
    )
    return AppProcess([*prefix, *args], log_path=tmp_path / "count.log")


def test_sigterm_during_a_store_restore_exits_0_promptly(bootstrap, tmp_path) -> None:
    """A SIGTERM while a store is being restored from its changelog stops the restore and
    exits 0 within seconds; the next start restores and counts on exactly (each key's counts
    are 1..N)."""
    source = create_topic(bootstrap, unique_name("in"), 2)
    sink = create_topic(bootstrap, unique_name("out"), 2)
    app_id = unique_name("term-restore")
    # Enough changelog for several restore chunks per partition (5,000 records each): a
    # transaction writes one changelog record per key it updated, so every key distinct.
    produce(bootstrap, source, ((f"k{i}", f"v{i}") for i in range(40_000)))
    first = _count_app(tmp_path, bootstrap, source, sink, app_id).start()
    wait_caught_up(bootstrap, app_id, source, timeout=120)
    _stop(first, when_started=True)
    shutil.rmtree(tmp_path / "state")  # the next start restores everything
    restoring = _count_app(tmp_path, bootstrap, source, sink, app_id, "--slow-restore", "2")
    restoring.starts = first.starts
    restoring.start().wait_for_current_log("eos.state: restoring counts", 60)
    took = _stop(restoring, bound=10.0)
    assert "restored the stores" not in restoring.current_log()
    produce(bootstrap, source, ((f"k{i % 50}", f"w{i}") for i in range(1000)))
    last = _count_app(tmp_path, bootstrap, source, sink, app_id)
    last.starts = restoring.starts
    last.start()
    wait_caught_up(bootstrap, app_id, source, timeout=120)
    _stop(last, when_started=True)
    emitted: dict[bytes, list[int]] = defaultdict(list)
    for record in read_topic(bootstrap, sink):
        emitted[record.key].append(int(record.value))  # type: ignore[arg-type]
    truth = Counter(r.key for r in read_topic(bootstrap, source))
    wrong = [k for k, n in truth.items() if emitted[k] != list(range(1, n + 1))]
    print(f"stopped {took:.1f}s after SIGTERM during the restore; wrong keys={len(wrong)}")
    assert wrong == []


def test_sigterm_during_a_commit_exits_0_exactly_once(bootstrap, tmp_path) -> None:
    """A SIGTERM while a commit is under way (held 3 s by a fault hook) lets the commit
    finish and exits 0; a restart finds every input exactly once."""
    source = create_topic(bootstrap, unique_name("in"), 2)
    sink = create_topic(bootstrap, unique_name("out"), 2)
    app_id = unique_name("term-commit")
    produce(bootstrap, source, ((f"k{i % 11}", f"v{i:05d}") for i in range(4000)))
    args = ["--bootstrap-servers", bootstrap, "--input", source, "--output", sink]
    args += ["--application-id", app_id, "--max-batch-records", "500"]
    app = AppProcess(
        [FAULT_APP, "uppercase", "--slow-commit", "3", "--", *args], log_path=tmp_path / "a.log"
    ).start()
    app.wait_for_current_log("slow commit attempt", 60)
    took = _stop(app)
    assert "slow commit attempt 3" not in app.current_log()
    resumed = AppProcess([str(EXAMPLES / "uppercase.py"), *args], log_path=tmp_path / "a.log")
    resumed.starts = app.starts
    resumed.start()
    wait_caught_up(bootstrap, app_id, source, timeout=120)
    _stop(resumed, when_started=True)
    verdict = verify_exactly_once(
        read_topic(bootstrap, source), read_topic(bootstrap, sink), bytes.upper
    )
    print(f"stopped {took:.1f}s after SIGTERM during a commit; {verdict}")
    assert verdict.ok and verdict.inputs == 4000, verdict
