"""``eos dev-kafka up|down|status``: a local Kafka left running in the background.

``up`` starts a :class:`eos.testing.kafka.KafkaCluster` with detached node
processes and records them in ``<cache>/dev-kafka.json``; a second ``up`` finds
that record, checks the nodes still answer, and prints the same bootstrap
servers without starting anything. ``down`` stops what ``up`` started and
removes its data directory.

Needs Java 17+ (``java`` on ``PATH`` or ``JAVA_HOME``) and Maven (``mvn`` on
``PATH``); the first ``up`` fetches Kafka's jars from Maven Central, later ones
need no network. ``<cache>`` is :func:`eos.testing.kafka.cache_dir`:
``$EOS_CACHE_DIR``, else ``$XDG_CACHE_HOME/eos``, else ``~/.cache/eos``. The
command's help (``eos dev-kafka --help``) says the same.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

from eos.testing.kafka import (
    KAFKA_VERSION,
    KafkaCluster,
    cache_dir,
    port_open,
    resolve_kafka,
)
from eos.testing.security import ClusterSecurity

APP_USER = "eos-app"
"""The application user ``eos dev-kafka up --security sasl`` creates."""


def _state_path() -> Path:
    return cache_dir() / "dev-kafka.json"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def _read_state() -> dict[str, object] | None:
    path = _state_path()
    if not path.exists():
        return None
    try:
        state: dict[str, object] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return state


def _state_running(state: dict[str, object]) -> bool:
    nodes = state.get("nodes")
    if not isinstance(nodes, list) or not nodes:
        return False
    return all(_alive(int(n["pid"])) and port_open(int(n["port"])) for n in nodes)


def up(nodes: int = 1, security: str | None = None) -> int:
    """Start (or find) the background cluster; print bootstrap servers last.

    ``security="sasl"``: SCRAM-SHA-512 users ``admin`` (super user) and
    ``eos-app`` (no ACLs), ACLs enforced, and a SASL_SSL listener besides the
    SASL_PLAINTEXT one; the users' client settings go to ``<name>.properties``
    files in the cluster's directory (mode 0600), whose paths are printed.
    """
    state = _read_state()
    if state is not None and _state_running(state):
        running_nodes = len(state["nodes"])  # type: ignore[arg-type]
        running_security = state.get("security")
        if running_nodes != nodes or running_security != security:
            print(
                f"eos: a {running_nodes}-node dev Kafka "
                f"({'security ' + str(running_security) if running_security else 'no security'})"
                f" is already running at {state['bootstrap_servers']}; run `eos dev-kafka down`"
                f" first to start {nodes} node(s)"
                + (f" with security {security}" if security else " without security"),
                file=sys.stderr,
            )
            return 1
        print("eos: Kafka already running (started by an earlier `eos dev-kafka up`)")
        print(state["bootstrap_servers"])
        return 0
    if state is not None:
        _teardown(state)
    fetched_before = (cache_dir() / f"kafka-{KAFKA_VERSION}" / "COMPLETE").exists()
    started = time.monotonic()
    resolve_kafka()
    print(
        f"eos: Kafka {KAFKA_VERSION} jars "
        + ("from the Maven cache (no download)" if fetched_before else "fetched with Maven")
        + f" in {cache_dir()}",
        flush=True,
    )
    directory = cache_dir() / "dev-kafka"
    shutil.rmtree(directory, ignore_errors=True)
    secured = ClusterSecurity.with_users(APP_USER) if security == "sasl" else None
    cluster = KafkaCluster(nodes, directory=directory, detach=True, security=secured)
    cluster.start()
    _state_path().write_text(
        json.dumps(
            {
                "bootstrap_servers": cluster.bootstrap_servers,
                "directory": str(directory),
                "nodes": [{"pid": n.pid, "port": n.port} for n in cluster.nodes],
                "security": security,
            }
        )
    )
    if secured is not None:
        _write_client_files(cluster, secured, directory)
    total = time.monotonic() - started
    print(
        f"eos: Kafka ready with {nodes} node(s) in {cluster.ready_seconds or 0:.1f}s "
        f"(broker start to ready; {total:.1f}s in all)",
        flush=True,
    )
    print(cluster.bootstrap_servers, flush=True)
    return 0


def _write_client_files(cluster: KafkaCluster, secured: ClusterSecurity, directory: Path) -> None:
    """One properties file per user (passwords included, mode 0600); print the paths only."""
    paths = []
    for user in (secured.admin, *secured.users):
        path = directory / f"{user.name}.properties"
        text = (
            f"# eos dev-kafka client settings for user {user.name}\n"
            f"bootstrap.servers={cluster.bootstrap_servers}\n"
            + secured.properties(user)
            + f"# over TLS instead: bootstrap.servers={cluster.tls_bootstrap_servers}\n"
            + "# security.protocol=SASL_SSL\n"
            + f"# ssl.ca.location={secured.ca_path}\n"
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(text)
        paths.append(str(path))
    print(
        f"eos: SASL/SCRAM-SHA-512 with ACLs enforced; users {secured.admin.name} (super user) "
        f"and {APP_USER} (no ACLs yet); client settings in {', '.join(paths)}; "
        f"SASL_SSL at {cluster.tls_bootstrap_servers} (CA {secured.ca_path})",
        flush=True,
    )


def _teardown(state: dict[str, object]) -> None:
    nodes = state.get("nodes")
    pids = [int(n["pid"]) for n in nodes] if isinstance(nodes, list) else []
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    directory = state.get("directory")
    if isinstance(directory, str):
        shutil.rmtree(directory, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        _state_path().unlink()


def down() -> int:
    """Stop what ``up`` started."""
    state = _read_state()
    if state is None:
        print("eos: no dev Kafka is running")
        return 0
    _teardown(state)
    print("eos: dev Kafka stopped")
    return 0


def status() -> int:
    """Print whether the dev cluster runs; exit 0 if it does, 1 if not."""
    state = _read_state()
    if state is None or not _state_running(state):
        print("eos: dev Kafka is not running", file=sys.stderr)
        return 1
    print(f"eos: dev Kafka running, pids {[n['pid'] for n in state['nodes']]}")  # type: ignore[attr-defined]
    print(state["bootstrap_servers"])
    return 0
