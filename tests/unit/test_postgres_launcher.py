"""The local PostgreSQL launcher's pure parts: finding the binaries, EOS_POSTGRES_DSN,
reprs without secrets, the errors that say what to install, the CLI's wiring."""

from __future__ import annotations

from pathlib import Path

import pytest

from eos.cli import main
from eos.testing import _postgres_os as postgres
from eos.testing import postgres as launcher
from eos.testing.postgres import (
    ExternalPostgres,
    PostgresServer,
    PostgresSetupError,
    find_postgres_bin,
    start_postgres,
)

pytest_plugins = ["pytester"]


def _fake_bin(directory: Path) -> Path:
    directory.mkdir(parents=True)
    for name in ("initdb", "postgres"):
        (directory / name).write_text("#!/bin/sh\n")
        (directory / name).chmod(0o755)
    return directory


@pytest.fixture
def no_binaries(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Nothing to find: no EOS_POSTGRES_BIN, an empty PATH, an empty Debian root (returned)."""
    (tmp_path / "empty-path").mkdir()
    monkeypatch.delenv(postgres.POSTGRES_BIN_ENV, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-path"))
    root = tmp_path / "usr-lib-postgresql"
    root.mkdir()
    monkeypatch.setattr(postgres, "DEBIAN_POSTGRES_ROOT", root)
    return root


def test_eos_postgres_bin_wins(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, no_binaries: Path
) -> None:
    """EOS_POSTGRES_BIN is used as it is, ahead of PATH and the Debian directories."""
    _fake_bin(no_binaries / "16" / "bin")
    chosen = _fake_bin(tmp_path / "custom" / "bin")
    monkeypatch.setenv(postgres.POSTGRES_BIN_ENV, str(chosen))
    assert find_postgres_bin() == chosen


def test_eos_postgres_bin_without_binaries_is_an_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, no_binaries: Path
) -> None:
    """An EOS_POSTGRES_BIN without initdb and postgres is an error naming the variable,
    not a silent fall-back to another installation."""
    _fake_bin(no_binaries / "15" / "bin")
    monkeypatch.setenv(postgres.POSTGRES_BIN_ENV, str(tmp_path))
    with pytest.raises(PostgresSetupError, match="EOS_POSTGRES_BIN="):
        find_postgres_bin()


def test_initdb_on_path_gives_its_real_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, no_binaries: Path
) -> None:
    """initdb found on PATH through a symlink gives the directory the link points into."""
    real = _fake_bin(tmp_path / "opt" / "pg" / "bin")
    links = tmp_path / "links"
    links.mkdir()
    (links / "initdb").symlink_to(real / "initdb")
    monkeypatch.setenv("PATH", str(links))
    assert find_postgres_bin() == real.resolve()


def test_the_newest_debian_version_is_chosen(no_binaries: Path) -> None:
    """Of /usr/lib/postgresql/{9.6,13,17}/bin the newest with binaries wins, compared as
    versions (13 after 9.6), and a directory without the binaries is skipped."""
    for version in ("9.6", "13"):
        _fake_bin(no_binaries / version / "bin")
    (no_binaries / "17" / "bin").mkdir(parents=True)
    assert find_postgres_bin() == no_binaries / "13" / "bin"


def test_no_binaries_names_apt_get_install_postgresql(no_binaries: Path) -> None:
    """With no server binaries anywhere the error says to `apt-get install postgresql`
    and mentions EOS_POSTGRES_DSN as the way to use another server."""
    with pytest.raises(PostgresSetupError) as info:
        find_postgres_bin()
    assert "apt-get install postgresql" in str(info.value)
    assert "EOS_POSTGRES_DSN" in str(info.value)


def test_root_without_a_postgres_user_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    """As root with no `postgres` OS user the error explains PostgreSQL refuses root and
    how to get the user."""

    def missing(name: str) -> object:
        raise KeyError(name)

    monkeypatch.setattr(postgres.os, "geteuid", lambda: 0)
    monkeypatch.setattr(postgres.pwd, "getpwnam", missing)
    with pytest.raises(PostgresSetupError, match="refuses to run as root") as info:
        postgres._server_account()
    assert "apt-get install postgresql" in str(info.value)


def test_eos_postgres_dsn_starts_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """With EOS_POSTGRES_DSN set start_postgres returns that DSN and starts no server;
    stop and cleanup do nothing, kill and restart refuse."""

    def no_server(*args: object, **kwargs: object) -> PostgresServer:
        raise AssertionError("a server was started")

    monkeypatch.setattr(launcher, "PostgresServer", no_server)
    monkeypatch.setenv("EOS_POSTGRES_DSN", "postgresql://app@db.example:5432/orders")
    external = start_postgres()
    assert isinstance(external, ExternalPostgres)
    assert external.dsn == "postgresql://app@db.example:5432/orders"
    external.stop()
    external.cleanup()
    with pytest.raises(PostgresSetupError, match="needs the project's own server"):
        external.kill()
    with pytest.raises(PostgresSetupError, match="needs the project's own server"):
        external.restart(crash=True)


def test_reprs_hold_no_secrets(tmp_path: Path) -> None:
    """An external DSN's password never shows in the repr; a local server's repr is its
    port and data directory only, and its DSN carries no password."""
    external = ExternalPostgres("postgresql://app:s3cret-pw@db.example:5432/orders")
    assert "s3cret-pw" not in repr(external) and "s3cret-pw" not in str(external)
    server = PostgresServer(tmp_path / "data", port=5555)
    assert repr(server) == f"PostgresServer(port=5555, data_dir='{tmp_path / 'data'}')"
    assert server.dsn == "postgresql://eos@127.0.0.1:5555/eos"
    assert server.pid is None and not (tmp_path / "data").exists()


def test_a_long_data_dir_gets_no_unix_socket() -> None:
    """The Unix socket goes in the data directory unless its path would pass Linux's
    107-byte limit (then TCP only, instead of a server that refuses to start)."""
    assert postgres._socket_directories(Path("/tmp/eos-pg-abc")) == '"/tmp/eos-pg-abc"'
    assert postgres._socket_directories(Path("/tmp/" + "d" * 100)) == ""


def test_the_fixtures_use_eos_postgres_dsn(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A test file enabling the plugin gets EOS_POSTGRES_DSN from `postgres_dsn` and an
    ExternalPostgres from `postgres`, with no server started."""
    pytester.makepyfile(
        """
        pytest_plugins = ["eos.testing.postgres"]

        from eos.testing.postgres import ExternalPostgres

        def test_dsn(postgres, postgres_dsn):
            assert isinstance(postgres, ExternalPostgres)
            assert postgres_dsn == "postgresql://someone@db.example/x"
        """
    )
    monkeypatch.setenv("EOS_POSTGRES_DSN", "postgresql://someone@db.example/x")
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_dev_postgres_status_without_a_server_exits_1(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`eos dev-postgres status` with nothing started exits 1 and says so on stderr."""
    monkeypatch.setenv("EOS_CACHE_DIR", str(tmp_path))
    assert main(["dev-postgres", "status"]) == 1
    assert "not running" in capsys.readouterr().err


def test_dev_postgres_help_says_what_it_needs_and_where_it_caches(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`eos dev-postgres --help` names the binaries and how to install them, psycopg's
    extra, EOS_POSTGRES_DSN and the files in the cache directory."""
    with pytest.raises(SystemExit):
        main(["dev-postgres", "--help"])
    text = capsys.readouterr().out
    for needed in (
        "apt-get install postgresql",
        "eos-kafka[postgres]",
        "EOS_POSTGRES_DSN",
        "EOS_POSTGRES_BIN",
        "dev-postgres.json",
    ):
        assert needed in text
