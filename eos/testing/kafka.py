"""A real Apache Kafka for tests and demos, started from jars that Maven fetches.

librdkafka's mock cluster fences nobody and hides no aborted records, so every
test that claims a guarantee runs against a real broker. This module:

1. resolves a pinned ``org.apache.kafka:kafka_2.13`` release and its runtime
   dependencies with ``mvn`` into a per-user cache directory, once;
2. formats KRaft storage (``kafka.tools.StorageTool``) in a temporary directory;
3. starts one combined broker+controller node, or three (three controller
   voters, each also a broker), on 127.0.0.1 with free ports and small heaps;
4. waits until the cluster answers metadata and a transactional
   ``init_transactions()`` succeeds.

If ``EOS_BOOTSTRAP_SERVERS`` is set, :func:`start_kafka` starts nothing and
returns an :class:`ExternalCluster` for that address.

Threading: a :class:`KafkaCluster` is driven from one thread. Node processes are
children of the calling process unless ``detach=True`` (used by ``eos dev-kafka``).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from eos.errors import EosError
from eos.testing.security import ClusterSecurity

__all__ = [
    "KAFKA_VERSION",
    "ExternalCluster",
    "KafkaCluster",
    "KafkaNode",
    "KafkaSetupError",
    "cache_dir",
    "port_open",
    "resolve_kafka",
    "start_kafka",
]

log = logging.getLogger("eos.testing.kafka")

KAFKA_VERSION = "4.1.1"
LOG4J_VERSION = "2.24.3"
DEFAULT_HEAP_MB = 384
DEFAULT_READY_TIMEOUT_S = 120.0
ENV_BOOTSTRAP = "EOS_BOOTSTRAP_SERVERS"

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>eos.dev</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>{kafka}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version>
    </dependency>
  </dependencies>
</project>
"""

_LOG4J2 = """status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = {path}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
"""


class KafkaSetupError(EosError):
    """The local Kafka could not be installed or started.

    Raised by :func:`resolve_kafka` and :class:`KafkaCluster`. The message says
    what is missing (Java 17+, Maven) or carries the tail of the broker log.
    Install what it names, or run a broker yourself (``docker compose -f
    docker-compose.test.yml up``) and set ``EOS_BOOTSTRAP_SERVERS``.
    """


def cache_dir() -> Path:
    """The per-user cache for Kafka jars and ``eos dev-kafka`` state.

    ``EOS_CACHE_DIR`` wins; then ``$XDG_CACHE_HOME/eos``; then ``~/.cache/eos``.
    """
    env = os.environ.get("EOS_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "eos"


def _java_major(java: str) -> int:
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not match:
        return 0
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def _require_java() -> str:
    java = shutil.which("java", path=_java_path())
    if java is None:
        raise KafkaSetupError(
            "Java 17 or newer is needed to run the local Kafka broker and none was found "
            "(install OpenJDK 17, e.g. `apt-get install openjdk-17-jre-headless`), or start "
            "Kafka with `docker compose -f docker-compose.test.yml up -d` and set "
            f"{ENV_BOOTSTRAP}=127.0.0.1:19092"
        )
    major = _java_major(java)
    if major < 17:
        raise KafkaSetupError(
            f"Kafka {KAFKA_VERSION} needs Java 17 or newer; {java} is Java {major}. "
            "Install OpenJDK 17+ (or set JAVA_HOME), or use docker-compose.test.yml and "
            f"{ENV_BOOTSTRAP}"
        )
    return java


def _java_path() -> str | None:
    home = os.environ.get("JAVA_HOME")
    if home:
        return os.pathsep.join([str(Path(home) / "bin"), os.environ.get("PATH", "")])
    return None


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def resolve_kafka(version: str = KAFKA_VERSION, *, quiet: bool = False) -> Path:
    """Return the directory of Kafka's jars, fetching them with Maven the first time.

    The jars land in ``cache_dir()/kafka-<version>/libs``; a marker file makes
    later calls free. Concurrent callers wait on a file lock.

    Raises:
        KafkaSetupError: Maven is missing or the download failed.
    """
    home = cache_dir() / f"kafka-{version}"
    libs = home / "libs"
    marker = home / "COMPLETE"
    if marker.exists():
        return libs
    with _locked(cache_dir() / f".kafka-{version}.lock"):
        if marker.exists():
            return libs
        mvn = shutil.which("mvn")
        if mvn is None:
            raise KafkaSetupError(
                "Maven (`mvn`) is needed once to fetch Kafka's jars from Maven Central and it "
                "was not found: install it (e.g. `apt-get install maven`), or use "
                f"docker-compose.test.yml and set {ENV_BOOTSTRAP}"
            )
        home.mkdir(parents=True, exist_ok=True)
        (home / "pom.xml").write_text(_POM.format(kafka=version, log4j=LOG4J_VERSION))
        if libs.exists():
            shutil.rmtree(libs)
        if not quiet:
            print(
                f"eos: fetching Apache Kafka {version} with Maven into {home} (once)...",
                file=sys.stderr,
                flush=True,
            )
        started = time.monotonic()
        proc = subprocess.run(
            [
                mvn,
                "-B",
                "-q",
                "-f",
                str(home / "pom.xml"),
                "dependency:copy-dependencies",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={libs}",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        jars = list(libs.glob("*.jar")) if libs.exists() else []
        if proc.returncode != 0 or not any(j.name.startswith("kafka_2.13-") for j in jars):
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
            raise KafkaSetupError(f"mvn could not fetch Kafka {version}:\n{tail}")
        marker.write_text(f"{len(jars)} jars\n")
        if not quiet:
            print(
                f"eos: fetched {len(jars)} jars in {time.monotonic() - started:.1f}s",
                file=sys.stderr,
                flush=True,
            )
    return libs


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _random_cluster_id() -> str:
    """Kafka's ``Uuid.randomUuid().toString()``: URL-safe base64 of 16 random bytes, no
    padding, and never starting with ``-`` (which the storage tool's argument parser
    would read as an option: one start in 64 failed that way)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no broker log)"


@dataclass
class KafkaNode:
    """One KRaft node (controller and broker) of a :class:`KafkaCluster`.

    ``stop()`` shuts it down cleanly, ``kill()`` sends SIGKILL, ``restart()``
    starts it again on the same ports and data directory.
    """

    node_id: int
    port: int
    controller_port: int
    directory: Path
    classpath: str
    java: str
    heap_mb: int
    detach: bool = False
    tls_port: int | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    pid: int | None = None

    @property
    def config_path(self) -> Path:
        return self.directory / "server.properties"

    @property
    def log_path(self) -> Path:
        return self.directory / "server.log"

    def start(self) -> None:
        """Start the JVM; returns at once (the cluster waits for readiness)."""
        if self.running:
            return
        cmd = [
            self.java,
            f"-Xmx{self.heap_mb}m",
            "-Xms64m",
            "-XX:+UseSerialGC",
            "-XX:MaxMetaspaceSize=192m",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.directory / 'log4j2.properties'}",
            "-cp",
            self.classpath,
            "kafka.Kafka",
            str(self.config_path),
        ]
        out = open(self.directory / "stdout.log", "ab")  # noqa: SIM115 - owned by the child
        try:
            self.process = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=self.detach,
            )
        finally:
            out.close()
        self.pid = self.process.pid

    @property
    def running(self) -> bool:
        if self.process is not None:
            return self.process.poll() is None
        if self.pid is None:
            return False
        try:
            os.kill(self.pid, 0)
        except OSError:
            return False
        return True

    def _wait_exit(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                return True
            time.sleep(0.1)
        return not self.running

    def stop(self, timeout: float = 30.0) -> None:
        """Shut the node down cleanly (SIGTERM), escalating to SIGKILL after ``timeout``."""
        if not self.running or self.pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        if not self._wait_exit(timeout):
            self.kill()

    def kill(self) -> None:
        """Hard-kill the node (SIGKILL), as a crash or power loss would."""
        if self.pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        self._wait_exit(10.0)

    def restart(self, wait: bool = True, timeout: float = DEFAULT_READY_TIMEOUT_S) -> None:
        """Start a stopped or killed node again on the same ports and data."""
        if self.running:
            self.stop()
        self.start()
        if wait:
            deadline = time.monotonic() + timeout
            while not port_open(self.port):
                if not self.running:
                    raise KafkaSetupError(
                        f"Kafka node {self.node_id} exited on restart:\n{_tail(self.log_path)}"
                    )
                if time.monotonic() > deadline:
                    raise KafkaSetupError(
                        f"Kafka node {self.node_id} did not listen within {timeout:.0f}s:\n"
                        f"{_tail(self.log_path)}"
                    )
                time.sleep(0.2)


_RAFT_LEADER = re.compile(
    r"\[RaftManager id=(?P<leader>\d+)\] Completed transition to Leader\("
    r".*?, epoch=(?P<epoch>\d+), epochStartOffset"
)
_TXN_PARTITIONS = 10


def _java_hash(text: str) -> int:
    """Java's ``String.hashCode()`` (for text of the Basic Multilingual Plane)."""
    value = 0
    for char in text:
        value = (31 * value + ord(char)) & 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


def _java_abs(value: int) -> int:
    """Kafka's ``Utils.abs``: ``Integer.MIN_VALUE`` maps to 0."""
    return 0 if value == -(1 << 31) else abs(value)


def _server_properties(
    node: KafkaNode,
    voters: str,
    nodes: int,
    cluster_size_settings: dict[str, str],
    security: ClusterSecurity | None = None,
) -> str:
    settings = {
        "process.roles": "broker,controller",
        "node.id": str(node.node_id),
        "controller.quorum.voters": voters,
        "listeners": (
            f"PLAINTEXT://127.0.0.1:{node.port},CONTROLLER://127.0.0.1:{node.controller_port}"
        ),
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{node.port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(node.directory / "data"),
        "num.partitions": "1",
        "default.replication.factor": "1",
        "auto.create.topics.enable": "false",
        "group.initial.rebalance.delay.ms": "0",
        "group.min.session.timeout.ms": "1000",
        "offsets.topic.num.partitions": "10",
        "transaction.state.log.num.partitions": str(_TXN_PARTITIONS),
        "num.network.threads": "2",
        "num.io.threads": "4",
        "num.recovery.threads.per.data.dir": "1",
        "log.cleaner.threads": "1",
        "log.cleaner.dedupe.buffer.size": str(16 * 1024 * 1024),
        "log.cleaner.backoff.ms": "5000",
        "delete.topic.enable": "true",
        # Small clusters: replication of the internal topics matched to the node count.
        "offsets.topic.replication.factor": str(min(nodes, 3)),
        "transaction.state.log.replication.factor": str(min(nodes, 3)),
        "transaction.state.log.min.isr": str(min(nodes, 2)),
        "share.coordinator.state.topic.replication.factor": str(min(nodes, 3)),
        "share.coordinator.state.topic.min.isr": str(min(nodes, 2)),
    }
    if security is not None and node.tls_port is not None:
        settings.update(security.server_settings(node.port, node.tls_port, node.controller_port))
    settings.update(cluster_size_settings)
    return "".join(f"{k}={v}\n" for k, v in settings.items())


class KafkaCluster:
    """A local KRaft cluster of 1 or 3 nodes on 127.0.0.1.

    Lifecycle: ``start()`` (blocking until ready) then ``stop()``; also a
    context manager. ``nodes[i].kill()`` / ``.restart()`` inject faults.
    Data lives in a temporary directory removed by ``stop()``.

    Args:
        nodes: 1 (one combined node) or 3 (three voters, each also a broker).
        heap_mb: JVM heap per node.
        directory: where to put data; a fresh temp dir when None.
        detach: start nodes in their own session so they outlive this process.
        broker_settings: extra ``server.properties`` entries for every node.
        security: SASL/SCRAM users, ACLs and TLS (:mod:`eos.testing.security`);
            ``bootstrap_servers`` is then the SASL_PLAINTEXT listener and
            ``tls_bootstrap_servers`` the SASL_SSL one; clients need
            ``security.client_settings(user)``.
    """

    def __init__(
        self,
        nodes: int = 1,
        *,
        heap_mb: int | None = None,
        directory: str | os.PathLike[str] | None = None,
        detach: bool = False,
        broker_settings: dict[str, str] | None = None,
        security: ClusterSecurity | None = None,
    ) -> None:
        if nodes not in (1, 3):
            raise ValueError(f"nodes must be 1 or 3, not {nodes}")
        self.node_count = nodes
        self.heap_mb = heap_mb or (DEFAULT_HEAP_MB if nodes == 1 else 320)
        self.detach = detach
        self.broker_settings = dict(broker_settings or {})
        self.security = security
        self._own_directory = directory is None
        self.directory = Path(directory or tempfile.mkdtemp(prefix="eos-kafka-"))
        self.nodes: list[KafkaNode] = []
        self.ready_seconds: float | None = None

    @property
    def bootstrap_servers(self) -> str:
        """Comma-separated ``127.0.0.1:port`` of every node."""
        return ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    @property
    def tls_bootstrap_servers(self) -> str:
        """The SASL_SSL listeners of a secured cluster."""
        return ",".join(f"127.0.0.1:{n.tls_port}" for n in self.nodes if n.tls_port)

    def active_controller(self, timeout: float = 60.0) -> KafkaNode:
        """The node that is the KRaft quorum's leader now, read from the nodes' logs.

        Each node logs when it becomes the Raft leader, with the epoch; the
        highest epoch names the active controller. Waits (up to ``timeout``)
        while an election is under way.
        """
        deadline = time.monotonic() + timeout
        while True:
            best: tuple[int, int] | None = None
            for node in self.nodes:
                try:
                    text = node.log_path.read_text(errors="replace")
                except OSError:
                    continue
                for match in _RAFT_LEADER.finditer(text):
                    epoch, leader = int(match["epoch"]), int(match["leader"])
                    if best is None or epoch > best[0]:
                        best = (epoch, leader)
            if best is not None:
                for node in self.nodes:
                    if node.node_id == best[1] and node.running:
                        return node
            if time.monotonic() > deadline:
                raise KafkaSetupError(f"no active controller known after {timeout:.0f}s")
            time.sleep(0.2)

    def transaction_coordinator(self, transactional_id: str) -> KafkaNode:
        """The node leading the ``__transaction_state`` partition of ``transactional_id``
        (``abs(transactional_id.hashCode()) % transaction.state.log.num.partitions``)."""
        from confluent_kafka.admin import AdminClient

        partitions = int(
            self.broker_settings.get("transaction.state.log.num.partitions", _TXN_PARTITIONS)
        )
        partition = _java_abs(_java_hash(transactional_id)) % partitions
        admin = AdminClient(self.admin_settings())
        metadata = admin.list_topics("__transaction_state", timeout=10)
        leader = metadata.topics["__transaction_state"].partitions[partition].leader
        for node in self.nodes:
            if node.node_id == leader:
                return node
        raise KafkaSetupError(
            f"the leader of __transaction_state[{partition}] is not known (node {leader})"
        )

    def admin_settings(self) -> dict[str, str | int | float | bool]:
        """librdkafka settings of a super user (just the bootstrap servers when not secured)."""
        settings: dict[str, str | int | float | bool] = {
            "bootstrap.servers": self.bootstrap_servers
        }
        if self.security is not None:
            settings.update(self.security.client_settings(self.security.admin))
        return settings

    def start(self, timeout: float = DEFAULT_READY_TIMEOUT_S) -> KafkaCluster:
        """Fetch (once), format and start the nodes; return when the cluster is ready.

        Raises:
            KafkaSetupError: Java/Maven missing, or not ready within ``timeout``
                (the message has the tail of the broker log).
        """
        java = _require_java()
        libs = resolve_kafka()
        classpath = str(libs / "*")
        started = time.monotonic()
        per_node = 3 if self.security is not None else 2
        ports = _free_ports(per_node * self.node_count)
        if self.security is not None:
            self.security.prepare(self.directory / "security", java)
        for index in range(self.node_count):
            node_dir = self.directory / f"node-{index + 1}"
            (node_dir / "data").mkdir(parents=True, exist_ok=True)
            mine = ports[per_node * index : per_node * (index + 1)]
            self.nodes.append(
                KafkaNode(
                    node_id=index + 1,
                    port=mine[0],
                    controller_port=mine[1],
                    directory=node_dir,
                    classpath=classpath,
                    java=java,
                    heap_mb=self.heap_mb,
                    detach=self.detach,
                    tls_port=mine[2] if self.security is not None else None,
                )
            )
        voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.nodes)
        cluster_id = _random_cluster_id()
        for node in self.nodes:
            node.config_path.write_text(
                _server_properties(
                    node, voters, self.node_count, self.broker_settings, self.security
                )
            )
            (node.directory / "log4j2.properties").write_text(_LOG4J2.format(path=node.log_path))
        formats = [
            subprocess.Popen(
                [
                    java,
                    "-Xmx128m",
                    "-XX:+UseSerialGC",
                    f"-Dlog4j2.configurationFile={node.directory / 'log4j2.properties'}",
                    "-cp",
                    classpath,
                    "kafka.tools.StorageTool",
                    "format",
                    "-t",
                    cluster_id,
                    "-c",
                    str(node.config_path),
                    *(self.security.format_arguments() if self.security is not None else []),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            for node in self.nodes
        ]
        for node, proc in zip(self.nodes, formats, strict=True):
            output, _ = proc.communicate(timeout=120)
            if proc.returncode != 0:
                raise KafkaSetupError(
                    f"formatting KRaft storage for node {node.node_id} failed:\n"
                    f"{output.decode(errors='replace')[-2000:]}"
                )
        for node in self.nodes:
            node.start()
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        self.ready_seconds = time.monotonic() - started
        log.info(
            "Kafka %s ready at %s (%d node(s)) in %.1fs",
            KAFKA_VERSION,
            self.bootstrap_servers,
            self.node_count,
            self.ready_seconds,
        )
        return self

    def wait_ready(self, timeout: float = DEFAULT_READY_TIMEOUT_S) -> None:
        """Block until every node answers metadata and a transaction can be initialised."""
        from confluent_kafka import KafkaException, Producer
        from confluent_kafka.admin import AdminClient

        deadline = time.monotonic() + timeout

        def check_alive() -> None:
            for node in self.nodes:
                if not node.running:
                    raise KafkaSetupError(
                        f"Kafka node {node.node_id} exited during start-up:\n"
                        f"{_tail(node.log_path)}\n{_tail(node.directory / 'stdout.log', 10)}"
                    )
            if time.monotonic() > deadline:
                raise KafkaSetupError(
                    f"Kafka was not ready within {timeout:.0f}s; broker log tail:\n"
                    f"{_tail(self.nodes[0].log_path)}"
                )

        while not all(port_open(n.port) for n in self.nodes):
            check_alive()
            time.sleep(0.2)
        admin = AdminClient(self.admin_settings())
        while True:
            check_alive()
            try:
                metadata = admin.list_topics(timeout=5)
                if len(metadata.brokers) == self.node_count:
                    break
            except KafkaException:
                pass
            time.sleep(0.3)
        producer = Producer(
            {
                **self.admin_settings(),
                "transactional.id": f"eos-ready-check-{uuid.uuid4().hex[:8]}",
                "log_level": 3,
            }
        )
        while True:
            check_alive()
            try:
                producer.init_transactions(max(1.0, min(30.0, deadline - time.monotonic())))
                break
            except KafkaException as exc:
                error = exc.args[0]
                if not error.retriable() and error.fatal():
                    raise KafkaSetupError(f"transactions unavailable: {error}") from exc
                time.sleep(0.3)
        producer.flush(1)

    def stop(self) -> None:
        """Stop every node cleanly (in parallel) and delete the data directory."""
        for node in self.nodes:
            if node.running and node.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(node.pid, signal.SIGTERM)
        for node in self.nodes:
            if not node._wait_exit(30.0):
                node.kill()
        if self._own_directory:
            shutil.rmtree(self.directory, ignore_errors=True)

    def discard(self) -> None:
        """Kill every node (SIGKILL) and delete the data directory: for a cluster whose
        data nobody needs again (a test session's), where a clean shutdown of every
        partition the session created would only cost time."""
        for node in self.nodes:
            if node.running and node.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(node.pid, signal.SIGKILL)
        for node in self.nodes:
            node._wait_exit(10.0)
        if self._own_directory:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> KafkaCluster:
        return self.start() if not self.nodes else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class ExternalCluster:
    """A cluster someone else runs (``EOS_BOOTSTRAP_SERVERS``): no fault injection."""

    bootstrap_servers: str
    nodes: list[KafkaNode] = field(default_factory=list)
    ready_seconds: float | None = 0.0

    def stop(self) -> None:
        """Nothing to stop: the cluster is not ours."""

    def discard(self) -> None:
        """Nothing to discard: the cluster is not ours."""


def start_kafka(nodes: int = 1, **kwargs: object) -> KafkaCluster | ExternalCluster:
    """Start a local cluster, or use ``EOS_BOOTSTRAP_SERVERS`` when it is set."""
    external = os.environ.get(ENV_BOOTSTRAP)
    if external:
        return ExternalCluster(external)
    cluster = KafkaCluster(nodes, **kwargs)  # type: ignore[arg-type]
    return cluster.start()
