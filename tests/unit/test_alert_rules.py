"""The Prometheus alert rules in deploy/prometheus: promtool checks them and runs their tests.

``promtool check rules`` validates ``alerts.yml`` (syntax, PromQL, templates) and
``promtool test rules`` runs ``alerts_test.yml``, which feeds series over time and
asserts when each alert fires, with its rendered labels and annotations. The rest
checks what promtool does not: every alert is tested firing and not firing, is
routable (``severity``) and has a runbook section in docs/operations.md.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES_DIR = ROOT / "deploy" / "prometheus"
ALERTS = RULES_DIR / "alerts.yml"
ALERT_TESTS = RULES_DIR / "alerts_test.yml"
OPERATIONS = ROOT / "docs" / "operations.md"
MONITORING = ROOT / "docs" / "monitoring.md"

# The issue's list of alerts, by the name each has in alerts.yml.
REQUIRED_ALERTS = {
    "lag growing": "EosLagGrowing",
    "no commit for N intervals": "EosNoCommit",
    "abort rate": "EosAbortRateHigh",
    "fenced instance": "EosProducerFenced",
    "app failed": "EosApplicationFailed",
    "restore taking long": "EosRestoreTakingLong",
}

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool is not installed (Debian's prometheus package; .ci/run installs it)",
)


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args],
        cwd=RULES_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def alerts() -> list[dict[str, Any]]:
    loaded = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return [rule for group in loaded["groups"] for rule in group["rules"] if "alert" in rule]


@needs_promtool
def test_promtool_check_rules_accepts_the_rules() -> None:
    """promtool validates every rule of alerts.yml: PromQL, durations, label templates."""
    result = promtool("check", "rules", ALERTS.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in result.stdout + result.stderr


@needs_promtool
def test_promtool_test_rules_passes() -> None:
    """Each alert fires exactly when alerts_test.yml says, with the labels and text it says."""
    result = promtool("test", "rules", ALERT_TESTS.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_the_issue_alerts_exist() -> None:
    """The rules cover every alert the issue lists."""
    names = {rule["alert"] for rule in alerts()}
    assert len(names) == len(alerts()), "alert names are unique"
    assert set(REQUIRED_ALERTS.values()) <= names


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    """alerts_test.yml has, for each alert, a case where it fires and one where it must not."""
    tests = yaml.safe_load(ALERT_TESTS.read_text(encoding="utf-8"))
    assert tests["rule_files"] == [ALERTS.name]
    fires: set[str] = set()
    silent: set[str] = set()
    for test in tests["tests"]:
        for case in test.get("alert_rule_test", []):
            (fires if case.get("exp_alerts") else silent).add(case["alertname"])
    names = {rule["alert"] for rule in alerts()}
    assert names - fires == set(), "alerts never tested firing"
    assert names - silent == set(), "alerts never tested staying silent"


def test_every_alert_is_routable_and_has_its_runbook() -> None:
    """Each alert has a severity, a summary and description, and a runbook section that exists."""
    operations = OPERATIONS.read_text(encoding="utf-8")
    headings = set(re.findall(r"^### (\w+)$", operations, re.MULTILINE))
    for rule in alerts():
        name = rule["alert"]
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        annotations = rule["annotations"]
        assert annotations["summary"] and annotations["description"], name
        assert annotations["runbook"] == f"docs/operations.md#{name.lower()}", name
        assert name in headings, f"docs/operations.md has no '### {name}' section"
        assert f"| [{name}](#{name.lower()}) |" in operations, f"{name} is not in the table"


def test_the_monitoring_page_points_to_the_rules_file() -> None:
    """docs/monitoring.md's alert examples send the reader to the tested rules file."""
    text = MONITORING.read_text(encoding="utf-8")
    section = text.split("## Alerts worth setting", 1)[1].split("\n## ", 1)[0]
    assert "deploy/prometheus/alerts.yml" in section
    assert "operations.md" in section
