"""eos against a secured cluster: SASL/SCRAM-SHA-512 users, ACLs (StandardAuthorizer), TLS.

A pipeline granted exactly the ACLs docs/security.md lists passes the copy and count
checks; a wrong password, a denied transactional id, output topic or group each stop the
application within 30 s with an error naming the resource and the operation, and nothing
is half-committed; the password never appears in anything the application writes.
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Iterator

import pytest
from apprunner import AppThread, Count, Upper

import eos
from eos.testing.helpers import committed_offsets, produce, read_topic, unique_name
from eos.testing.kafka import KafkaCluster
from eos.testing.security import ClusterSecurity, application_acls, grant
from eos.testing.verify import verify_exactly_once

pytestmark = [pytest.mark.integration, pytest.mark.security]

APP_USER = "eos-app"
PASSWORD_MARK = "S3cr3t-eos-pa55-mark"
STOP_WITHIN_S = 30.0


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    """One node with SASL_PLAINTEXT and SASL_SSL listeners and ACLs enforced."""
    import os

    if os.environ.get("EOS_BOOTSTRAP_SERVERS"):
        pytest.skip("the secured cluster is the project's own (EOS_BOOTSTRAP_SERVERS is set)")
    security = ClusterSecurity.with_users(APP_USER)
    security = ClusterSecurity(
        users=(*security.users, eos.testing.security.SaslUser("marked", PASSWORD_MARK))
    )
    cluster = KafkaCluster(1, security=security).start()
    yield cluster
    cluster.stop()


def _sec(cluster: KafkaCluster) -> ClusterSecurity:
    assert cluster.security is not None
    return cluster.security


def _topics(cluster: KafkaCluster, *names: str, partitions: int = 2) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient(cluster.admin_settings())
    futures = admin.create_topics([NewTopic(n, partitions, 1) for n in names])
    for future in futures.values():
        future.result(30)
    deadline = time.monotonic() + 30
    while not all(n in admin.list_topics(timeout=10).topics for n in names):
        assert time.monotonic() < deadline
        time.sleep(0.1)


def _produce(cluster: KafkaCluster, topic: str, records) -> None:
    produce(cluster.bootstrap_servers, topic, records, config=cluster.admin_settings())


def _read(cluster: KafkaCluster, topic: str):
    return read_topic(cluster.bootstrap_servers, topic, config=cluster.admin_settings())


def _app(
    cluster: KafkaCluster,
    app_id: str,
    source: str,
    processor: eos.Processor,
    *,
    user: str = APP_USER,
    tls: bool = False,
    **kw: object,
) -> eos.Application:
    client = _sec(cluster).client_settings(user, tls=tls)
    return eos.Application(
        application_id=app_id,
        bootstrap_servers=cluster.tls_bootstrap_servers if tls else cluster.bootstrap_servers,
        input_topics=[source],
        processor=processor,
        producer_config=client,
        consumer_config=client,
        **kw,  # type: ignore[arg-type]
    )


def _committed(cluster: KafkaCluster, app_id: str, topic: str) -> dict[int, int]:
    return committed_offsets(
        cluster.bootstrap_servers, app_id, topic, config=cluster.admin_settings()
    )


@pytest.mark.parametrize("tls", [False, True], ids=["sasl-plaintext", "sasl-ssl"])
def test_exactly_the_documented_acls_are_enough(secured, app_threads, tmp_path, tls) -> None:
    """A copy pipeline and a count pipeline, their user granted only application_acls(),
    run exactly once (over SASL_SSL too): every input once, every key's counts 1..N."""
    source, sink, counts_out = unique_name("in"), unique_name("out"), unique_name("counts")
    _topics(secured, source, sink, counts_out)
    _produce(secured, source, ((f"k{i % 17}", f"v{i:05d}") for i in range(2000)))
    principal = f"User:{APP_USER}"
    copy_id, count_id = unique_name("copy"), unique_name("count")
    grant(
        secured.admin_settings(),
        application_acls(
            principal, application_id=copy_id, input_topics=[source], output_topics=[sink]
        )
        + application_acls(
            principal, application_id=count_id, input_topics=[source], output_topics=[counts_out]
        ),
    )
    copy = _app(secured, copy_id, source, Upper(sink), tls=tls)
    count = _app(
        secured,
        count_id,
        source,
        Count(counts_out),
        tls=tls,
        key_serde="string",
        value_serde="string",
        state_dir=str(tmp_path),
    )
    runners = [AppThread(copy).start(), AppThread(count).start()]
    app_threads.extend(runners)
    for app_id, runner in zip((copy_id, count_id), runners, strict=True):
        _wait_committed(secured, app_id, source, runner)
    for runner in runners:
        runner.stop()
    inputs = _read(secured, source)
    verdict = verify_exactly_once(inputs, _read(secured, sink), bytes.upper)
    emitted: dict[bytes, list[int]] = defaultdict(list)
    for record in _read(secured, counts_out):
        emitted[record.key].append(int(record.value))  # type: ignore[arg-type]
    truth = Counter(r.key for r in inputs)
    wrong = [k for k, n in truth.items() if emitted[k] != list(range(1, n + 1))]
    print(f"tls={tls} copy: {verdict}; count: wrong keys={len(wrong)} of {len(truth)}")
    assert verdict.ok and verdict.inputs == 2000, verdict
    assert wrong == []


def _wait_committed(cluster: KafkaCluster, app_id: str, topic: str, runner: AppThread) -> None:
    deadline = time.monotonic() + 90
    while True:
        ends = {p: hi for p, (_lo, hi) in _watermarks(cluster, topic).items()}
        done = _committed(cluster, app_id, topic)
        if all(done.get(p, -1) >= hi for p, hi in ends.items() if hi > 0):
            return
        assert runner.thread.is_alive(), f"{app_id} stopped: {runner.error!r}"
        assert time.monotonic() < deadline, f"{app_id} not caught up: {done} vs {ends}"
        time.sleep(0.2)


def _watermarks(cluster: KafkaCluster, topic: str) -> dict[int, tuple[int, int]]:
    from eos.testing.helpers import watermarks

    return watermarks(cluster.bootstrap_servers, topic, config=cluster.admin_settings())


def _stops(app: eos.Application, app_threads: list[AppThread]) -> BaseException | None:
    runner = AppThread(app).start()
    app_threads.append(runner)
    started = time.monotonic()
    error = runner.join(STOP_WITHIN_S + 15)
    took = time.monotonic() - started
    print(f"stopped after {took:.1f}s: {error!r}")
    assert took < STOP_WITHIN_S, f"took {took:.1f}s to stop"
    return error


def test_wrong_password_stops_with_a_clear_authentication_error(secured, app_threads) -> None:
    """A wrong password stops the application within 30 s with a ConfigError that names the
    user and says authentication failed; the password is not in it."""
    source = unique_name("in")
    _topics(secured, source)
    client = _sec(secured).client_settings(APP_USER)
    client["sasl.password"] = PASSWORD_MARK + "-wrong"
    app = eos.Application(
        application_id=unique_name("badpw"),
        bootstrap_servers=secured.bootstrap_servers,
        input_topics=[source],
        processor=Upper(unique_name("out")),
        producer_config=client,
        consumer_config=client,
    )
    error = _stops(app, app_threads)
    assert isinstance(error, eos.ConfigError), repr(error)
    text = str(error)
    assert "Authentication failed" in text and repr(APP_USER) in text
    assert PASSWORD_MARK not in text and PASSWORD_MARK not in repr(app)


def _denied(
    secured, app_threads, tmp_path, leave_out
) -> tuple[BaseException | None, str, str, str]:
    """Run a copy app whose user lacks the ACLs ``leave_out`` picks; return its error."""
    source, sink = unique_name("in"), unique_name("out")
    _topics(secured, source, sink)
    _produce(secured, source, ((f"k{i}", f"v{i}") for i in range(200)))
    app_id = unique_name("denied")
    acls = application_acls(
        f"User:{APP_USER}", application_id=app_id, input_topics=[source], output_topics=[sink]
    )
    grant(secured.admin_settings(), [a for a in acls if not leave_out(a, sink, app_id)])
    app = _app(secured, app_id, source, Upper(sink))
    return _stops(app, app_threads), app_id, source, sink


def test_denied_transactional_id_stops_naming_it(secured, app_threads, tmp_path) -> None:
    """Without WRITE on its transactional id the application stops within 30 s with a
    ConfigError naming the transactional id and the ACL to grant; nothing was committed."""
    from confluent_kafka.admin import ResourceType

    error, app_id, _source, sink = _denied(
        secured, app_threads, tmp_path, lambda a, _s, _i: a.restype == ResourceType.TRANSACTIONAL_ID
    )
    assert isinstance(error, eos.ConfigError), repr(error)
    assert f"TransactionalId:{app_id}-0" in str(error)
    assert _read(secured, sink) == []


def test_denied_output_topic_stops_naming_it(secured, app_threads, tmp_path) -> None:
    """Without WRITE on the output topic the application stops within 30 s with a
    ConfigError naming the topic and the operation; nothing was committed or is visible."""
    from confluent_kafka.admin import AclOperation

    error, app_id, source, sink = _denied(
        secured,
        app_threads,
        tmp_path,
        lambda a, s, _i: a.name == s and a.operation == AclOperation.WRITE,
    )
    assert isinstance(error, eos.ConfigError), repr(error)
    assert f"writing to topic {sink!r} was denied" in str(error)
    assert _read(secured, sink) == []
    assert all(o < 0 for o in _committed(secured, app_id, source).values())


def test_denied_group_stops_naming_it(secured, app_threads, tmp_path) -> None:
    """Without READ on its group the application stops within 30 s with a ConfigError
    naming the group; nothing is visible."""
    from confluent_kafka.admin import ResourceType

    error, app_id, _source, sink = _denied(
        secured, app_threads, tmp_path, lambda a, _s, _i: a.restype == ResourceType.GROUP
    )
    assert isinstance(error, eos.ConfigError), repr(error)
    assert f"READ on Group:{app_id}" in str(error)
    assert _read(secured, sink) == []


def test_the_password_never_appears_in_anything_the_app_writes(secured, tmp_path) -> None:
    """An application run with a recognizable password at DEBUG log level (`eos run`, a
    properties file, metrics on), then once more with a wrong one: the password is in none
    of the bytes it wrote (logs, errors), nor in repr(config), app.state or the metrics."""
    sec = _sec(secured)
    source, sink = unique_name("in"), unique_name("out")
    _topics(secured, source, sink)
    _produce(secured, source, ((f"k{i}", f"v{i}") for i in range(300)))
    app_id = unique_name("secret")
    grant(
        secured.admin_settings(),
        application_acls(
            "User:marked", application_id=app_id, input_topics=[source], output_topics=[sink]
        ),
    )
    props = tmp_path / "app.properties"

    def properties(password: str) -> str:
        client = sec.client_settings("marked")
        client["sasl.password"] = password
        return (
            f"application.id={app_id}\nbootstrap.servers={secured.bootstrap_servers}\n"
            f"input.topics={source}\nmetrics.port=0\n"
            + "".join(f"{k}={v}\n" for k, v in client.items())
        )

    module = tmp_path / "secret_app.py"
    module.write_text(
        "import eos\n"
        "class Copy(eos.Processor):\n"
        "    def process(self, record, ctx):\n"
        f"        ctx.send({sink!r}, record.value, key=record.key)\n"
    )
    written = b""
    for password in (PASSWORD_MARK, PASSWORD_MARK + "-wrong"):
        props.write_text(properties(password))
        proc = subprocess.Popen(
            [sys.executable, "-m", "eos.cli", "--log-level", "DEBUG", "run", "secret_app:Copy",
             "--config", str(props)],
            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        if password == PASSWORD_MARK:
            deadline = time.monotonic() + 60
            while len(_read(secured, sink)) < 300:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.2)
            proc.terminate()
        out, _ = proc.communicate(timeout=60)
        written += out
    assert b"DEBUG" in written and b"refused the connection" in written
    assert PASSWORD_MARK.encode() not in written, "the password was written out"
    app = _app(secured, app_id, source, Upper(sink), user="marked", metrics_port=0)
    assert PASSWORD_MARK not in repr(app) and PASSWORD_MARK not in repr(app.config)
    runner = AppThread(app).start()
    try:
        deadline = time.monotonic() + 60
        while app.metrics_url is None or not app.state.assigned_partitions:
            assert time.monotonic() < deadline and runner.thread.is_alive(), runner.error
            time.sleep(0.1)
        metrics = urllib.request.urlopen(app.metrics_url, timeout=10).read().decode()
        assert PASSWORD_MARK not in metrics and PASSWORD_MARK not in repr(app.state)
    finally:
        runner.stop()
    print(f"searched {len(written):,} bytes of output, the metrics and the reprs: no password")
