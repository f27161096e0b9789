"""The ``eos`` command line (``--version``, ``python -m eos``, ``--log-level``, the
``dev-kafka`` help) and the README and docs statements it goes with."""

from __future__ import annotations

import importlib.metadata
import logging
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import eos
import eos.devkafka
import eos.runner
from eos.cli import LOG_LEVELS, main
from eos.config import DEFAULT_MAX_BATCH_RECORDS
from eos.runner import load_application
from eos.testing.driver import TestDriver
from eos.testing.kafka import cache_dir

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """Replace ``eos run``, ``eos dev-kafka status`` and logging set-up with recorders."""
    seen: dict[str, object] = {}

    def run(target: str, **kwargs: object) -> int:
        seen["run"] = target
        return 0

    def status() -> int:
        seen["status"] = True
        return 0

    def basic_config(**kwargs: object) -> None:
        seen["level"] = kwargs["level"]

    monkeypatch.setattr(eos.runner, "run", run)
    monkeypatch.setattr(eos.devkafka, "status", status)
    monkeypatch.setattr(logging, "basicConfig", basic_config)
    return seen


# ------------------------------------------------------------------ --version


def test_version_prints_the_installed_distribution_version(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`eos --version` prints the version of the installed eos-kafka distribution and exits 0."""
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    expected = importlib.metadata.version("eos-kafka")
    assert capsys.readouterr().out == f"eos {expected}\n"
    assert eos.__version__ == expected


def _python_m_eos(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "eos", *args], capture_output=True, text=True, check=False, cwd=ROOT
    )


def test_python_dash_m_eos_is_the_eos_command() -> None:
    """`python -m eos` runs the same command line: --version works and a bad call exits 2."""
    version = _python_m_eos("--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout == f"eos {eos.__version__}\n"
    bad = _python_m_eos("no-such-command")
    assert bad.returncode == 2
    assert bad.stderr.startswith("usage: eos ")


# ------------------------------------------------------------------ --log-level


@pytest.mark.parametrize(
    ("argv", "level"),
    [
        (["run", "app:APP"], "INFO"),
        (["--log-level", "debug", "run", "app:APP"], "DEBUG"),
        (["run", "app:APP", "--log-level", "debug"], "DEBUG"),
        (["run", "--log-level=Warning", "app:APP"], "WARNING"),
        (["--log-level", "error", "run", "app:APP", "--log-level", "DEBUG"], "DEBUG"),
        (["dev-kafka", "status", "--log-level", "critical"], "CRITICAL"),
        (["dev-kafka", "--log-level", "debug", "status"], "DEBUG"),
    ],
)
def test_log_level_is_accepted_before_and_after_the_subcommand(
    calls: dict[str, object], argv: list[str], level: str
) -> None:
    """--log-level works in any case on either side of the subcommand; a later one wins, and
    a subcommand without it keeps the one given before it."""
    assert main(argv) == 0
    assert calls["level"] == level
    assert ("run" in calls) == ("run" in argv)


@pytest.mark.parametrize(
    "argv",
    [
        ["--log-level", "loud", "run", "app:APP"],
        ["run", "app:APP", "--log-level", "verbose"],
        ["dev-kafka", "up", "--log-level", "5"],
    ],
)
def test_unknown_log_level_is_a_usage_error_listing_the_choices(
    calls: dict[str, object], capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    """An unknown --log-level exits 2 before anything runs, naming every accepted level."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --log-level: invalid choice" in err
    for name in LOG_LEVELS:
        assert repr(name) in err
    assert calls == {}


# ------------------------------------------------------------------ dev-kafka --help


@pytest.mark.parametrize("argv", [["dev-kafka", "--help"], ["dev-kafka", "up", "--help"]])
def test_dev_kafka_help_says_what_it_needs_and_where_it_caches(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    """`eos dev-kafka [up] --help` names Java 17+, Maven on PATH, Maven Central on the first
    run, and the cache directory with its environment variables and default."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    for needed in (
        "Java 17+",
        "JAVA_HOME",
        "`mvn` on PATH",
        "Maven Central on the first `up` only",
        "$EOS_CACHE_DIR",
        "$XDG_CACHE_HOME/eos",
        "~/.cache/eos",
    ):
        assert needed in out


def test_dev_kafka_help_states_the_real_cache_dir_order(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The order the help gives (EOS_CACHE_DIR, then XDG_CACHE_HOME/eos, then ~/.cache/eos)
    is the order cache_dir() uses."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("EOS_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert cache_dir() == tmp_path / ".cache" / "eos"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "eos"
    monkeypatch.setenv("EOS_CACHE_DIR", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"


# ------------------------------------------------------------------ README and docs


def _readme_block(language: str, containing: str) -> str:
    for match in re.finditer(r"^( *)```" + language + r"\n(.*?)^\1```", README, re.M | re.S):
        block = textwrap.dedent(match.group(2))
        if containing in block:
            return block
    raise AssertionError(f"README has no ```{language} block containing {containing!r}")


def test_readme_install_line_names_the_distribution() -> None:
    """The README installs the distribution pyproject.toml names and imports it as eos."""
    name = importlib.metadata.metadata("eos-kafka")["Name"]
    assert f"pip install {name}" in README
    assert "import eos" in README


def test_readme_keeps_the_demo_and_test_commands() -> None:
    """The README's set-up commands are unchanged: .ci/run runs its test command."""
    block = _readme_block("bash", "scripts/test.sh")
    assert block.splitlines() == ["bash scripts/demo.sh", "bash scripts/test.sh"]
    assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()


def test_readme_own_cluster_path_loads_and_processes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The README's own-cluster files load with `eos run upper:Upper --config app.properties`
    (no broker contacted) and the processor upper-cases values and skips tombstones."""
    (tmp_path / "app.properties").write_text(_readme_block("properties", "upper-words"))
    (tmp_path / "upper.py").write_text(_readme_block("python", "class Upper"))
    command = _readme_block("bash", "eos run upper:Upper")
    assert command.strip() == "eos run upper:Upper --config app.properties"
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "upper", raising=False)
    app = load_application("upper:Upper", config_path="app.properties")
    assert app.config.bootstrap_servers == "broker1:9092"
    assert tuple(app.config.input_topics) == ("words",)

    driver = TestDriver(
        app.processor, input_topics="words", key_serde="string", value_serde="string"
    )
    driver.send("hello", key="k")
    driver.send(None, key="gone")
    assert driver.output_pairs("words-upper") == [("k", "HELLO")]


def test_readme_processor_example_sends_keys_by_keyword() -> None:
    """Every ctx.send / driver.send in the README passes the key as key=..., never by position."""
    for call in re.findall(r"\b(?:ctx|driver)\.send\((.*)\)", README):
        positional = [a for a in call.split(",") if "=" not in a]
        assert len(positional) <= 2, call


def test_benchmarks_doc_states_the_real_max_batch_records_default() -> None:
    """docs/benchmarks.md gives max_batch_records' default as eos.config has it."""
    text = (ROOT / "docs" / "benchmarks.md").read_text()
    assert f"`max_batch_records` (default {DEFAULT_MAX_BATCH_RECORDS:,})" in text
