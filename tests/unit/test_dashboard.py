"""The Grafana dashboard and the PromQL shipped in deploy/ and the docs name only real series.

Every PromQL expression in ``deploy/grafana/eos.json`` (panel targets and template
variable queries), in ``deploy/prometheus/alerts.yml``, the input series of its promtool
tests, and the ``promql`` blocks of the monitoring and operations pages is lexed here,
and each series it selects is checked against what eos exports: the sample names and
labels an :class:`~eos.metrics.EosCollector` yields for a live ``EngineStats`` with a
sink, not a hand list. A renamed metric or label therefore fails this test instead of
leaving an empty panel or an alert that can never fire.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from eos.metrics import METRIC_NAMES, SINK_METRIC_NAMES, EosCollector
from eos.stats import EngineStats, SinkStats

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "eos.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
ALERT_TESTS = ROOT / "deploy" / "prometheus" / "alerts_test.yml"
DOCS = (ROOT / "docs" / "monitoring.md", ROOT / "docs" / "operations.md")

TARGET_LABELS = frozenset({"instance", "job"})
"""Labels Prometheus attaches to every series from the scrape target."""

PROMETHEUS_SERIES = {"up": frozenset()}
"""Series Prometheus itself writes for every scrape target (target labels only)."""

# The issue's panel list, by the title each has on the dashboard.
REQUIRED_PANELS = (
    "Throughput",
    "Commit rate",
    "Commit duration",
    "Aborts by reason",
    "Lag per partition",
    "Latency percentiles",
    "Restore progress",
    "App state",
    "Fenced and failed instances",
    "Late records",
)


# --------------------------------------------------------------------------- the registry


@cache
def exported() -> dict[str, frozenset[str]]:
    """Sample name -> its label names, for every series an eos application with a sink exports."""
    stats = EngineStats("app", clock=lambda: 1_700_000_000.0, sink=SinkStats("postgres"))
    # Fill what is absent until it happens: lag per partition, the last commit's time.
    stats.assigned = [("in", 0)]
    stats.set_partition("in", 0, 120, 100)
    stats.record_batch(10, 1_699_999_999_000, 1_699_999_999_500)
    stats.record_commit(10, 0.02, produced=10)
    series: dict[str, set[str]] = {}
    families: set[str] = set()
    for family in EosCollector(stats).collect():
        families.add(family.name)
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
    declared = {name.removesuffix("_total") for name in (*METRIC_NAMES, *SINK_METRIC_NAMES)}
    assert declared <= families, f"families without samples: {sorted(declared - families)}"
    return {name: frozenset(labels) for name, labels in series.items()}


def known_series() -> dict[str, frozenset[str]]:
    return {**exported(), **PROMETHEUS_SERIES}


# --------------------------------------------------------------------------- a PromQL lexer

_TOKEN = re.compile(
    r"""
      (?P<space>\s+)
    | (?P<comment>\#[^\n]*)
    | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
    | (?P<duration>(?:\d+(?:ms|[smhdwy]))+)(?![\w.])
    | (?P<number>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
    | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
    | (?P<op>=~|!~|!=|==|<=|>=|[-+*/%^<>=(){}\[\],@])
    """,
    re.VERBOSE,
)
_GROUPING = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
_WORDS = frozenset({"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"})
# Grafana's interval variables stand where PromQL wants a duration.
_GRAFANA_DURATION = re.compile(r"\$__(?:rate_interval|interval|range)\b|\$\{__[a-z_]+\}")


@dataclass(frozen=True)
class Selector:
    """One vector selector: its metric name (None without one) and its matchers."""

    name: str | None
    matchers: tuple[tuple[str, str, str], ...]


@dataclass
class Query:
    """What one expression selects: its selectors and the labels it groups or matches by."""

    selectors: list[Selector] = field(default_factory=list)
    grouping: set[str] = field(default_factory=set)


def _tokens(expr: str) -> list[tuple[str, str]]:
    expr = _GRAFANA_DURATION.sub("5m", expr)
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(expr):
        match = _TOKEN.match(expr, pos)
        if match is None:
            raise ValueError(f"cannot lex {expr[pos : pos + 20]!r} in {expr!r}")
        pos = match.end()
        kind = match.lastgroup
        assert kind is not None
        if kind not in ("space", "comment"):
            out.append((kind, match.group()))
    return out


def parse(expr: str) -> Query:
    """The selectors and grouping labels of a PromQL expression (Grafana variables allowed)."""
    tokens = _tokens(expr)
    query = Query()
    i = 0

    def peek(at: int) -> tuple[str, str] | None:
        return tokens[at] if at < len(tokens) else None

    while i < len(tokens):
        kind, text = tokens[i]
        if kind == "ident":
            word = text.lower()
            if word in _GROUPING:
                if peek(i + 1) == ("op", "("):
                    i += 2
                    while tokens[i] != ("op", ")"):
                        if tokens[i][0] == "ident":
                            query.grouping.add(tokens[i][1])
                        i += 1
                i += 1
            elif word in _WORDS or peek(i + 1) == ("op", "(") or _is_grouping(peek(i + 1)):
                i += 1  # an operator, a number, or a function or aggregation's name
            elif peek(i + 1) == ("op", "{"):
                matchers, i = _matchers(tokens, i + 2)
                query.selectors.append(Selector(text, matchers))
            else:
                query.selectors.append(Selector(text, ()))
                i += 1
        elif (kind, text) == ("op", "{"):
            matchers, i = _matchers(tokens, i + 1)
            query.selectors.append(Selector(None, matchers))
        elif (kind, text) == ("op", "["):
            while tokens[i] != ("op", "]"):  # a range or a subquery's range and step
                i += 1
            i += 1
        else:
            i += 1
    return query


def _is_grouping(token: tuple[str, str] | None) -> bool:
    return token is not None and token[0] == "ident" and token[1].lower() in ("by", "without")


def _matchers(
    tokens: list[tuple[str, str]], i: int
) -> tuple[tuple[tuple[str, str, str], ...], int]:
    """Read ``label op "value", ...}`` from ``i``; return them and the index after ``}``."""
    found: list[tuple[str, str, str]] = []
    while tokens[i] != ("op", "}"):
        if tokens[i] == ("op", ","):
            i += 1
            continue
        (lkind, label), (okind, op), (vkind, value) = tokens[i : i + 3]
        if lkind != "ident" or okind != "op" or vkind != "string":
            raise ValueError(f"unexpected matcher {label}{op}{value}")
        found.append((label, op, value[1:-1]))
        i += 3
    return tuple(found), i + 1


# --------------------------------------------------------------------------- the sources


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item)


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def dashboard_exprs() -> dict[str, str]:
    """Where -> expression, for every panel target and template variable query."""
    exprs: dict[str, str] = {}
    for panel in dashboard()["panels"]:
        for node in _walk(panel):
            if "expr" in node:
                exprs[f"panel target {node['refId']} of {panel['title']!r}"] = node["expr"]
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]
        text = query["query"] if isinstance(query, dict) else query
        match = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", text.strip(), re.DOTALL)
        assert match is not None, f"variable {variable['name']}: not label_values(...): {text}"
        exprs[f"variable {variable['name']}"] = match.group(1)
        # The label asked for is a label of that series: treat it as grouped by.
        exprs[f"variable {variable['name']} label"] = f"count by ({match.group(2)}) (vector(1))"
    return exprs


def alert_exprs() -> dict[str, str]:
    rules = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return {
        f"rule {rule.get('alert') or rule.get('record')}": rule["expr"]
        for group in rules["groups"]
        for rule in group["rules"]
    }


def alert_test_series() -> dict[str, str]:
    tests = yaml.safe_load(ALERT_TESTS.read_text(encoding="utf-8"))
    return {
        f"input series of test {test.get('name', n)!r}: {series['series']}": series["series"]
        for n, test in enumerate(tests["tests"])
        for series in test.get("input_series", [])
    }


def docs_exprs() -> dict[str, str]:
    exprs: dict[str, str] = {}
    for page in DOCS:
        if not page.exists():
            continue
        text = page.read_text(encoding="utf-8")
        for n, block in enumerate(re.findall(r"```promql\n(.*?)```", text, re.DOTALL)):
            exprs[f"{page.name} promql block {n}"] = block
    return exprs


# --------------------------------------------------------------------------- the checks


def unknown_series(exprs: dict[str, str]) -> list[str]:
    """Every selector, matcher label or grouping label in ``exprs`` that eos does not export."""
    series = known_series()
    all_labels = set(TARGET_LABELS).union(*series.values())
    problems: list[str] = []
    for where, expr in exprs.items():
        query = parse(expr)
        for selector in query.selectors:
            if selector.name is None:
                problems.append(f"{where}: a selector without a metric name: {selector}")
                continue
            if selector.name not in series:
                problems.append(f"{where}: {selector.name} is not a series eos exports")
                continue
            allowed = series[selector.name] | TARGET_LABELS
            for label, _op, _value in selector.matchers:
                if label not in allowed:
                    problems.append(f"{where}: {selector.name} has no label {label!r}")
        problems += [
            f"{where}: no exported series has the label {label!r}"
            for label in sorted(query.grouping - all_labels)
        ]
    return problems


def test_the_lexer_finds_selectors_and_labels_and_skips_the_rest() -> None:
    """The PromQL lexer reports metric names and labels, never functions, keywords or strings."""
    query = parse(
        'histogram_quantile(0.99, sum by (le, instance) (rate(eos_x_bucket{a=~"$v", b!="x{y}"}'
        "[$__rate_interval] offset 5m)))\n"
        "  / on (instance) group_left (job) max without (c) (eos_y) > bool 1e3 # eos_comment\n"
        '  or label_replace(eos_z[1h:1m] @ start(), "dst", "eos_w", "src", "(.*)") and {d="1"}'
    )
    assert [s.name for s in query.selectors] == ["eos_x_bucket", "eos_y", "eos_z", None]
    assert query.selectors[0].matchers == (("a", "=~", "$v"), ("b", "!=", "x{y}"))
    assert query.grouping == {"le", "instance", "job", "c"}
    problems = unknown_series({"q": 'sum by (le, nope) (eos_info{application_id="a", x="1"})'})
    assert problems == [
        "q: eos_info has no label 'x'",
        "q: no exported series has the label 'nope'",
    ]


def test_the_registry_has_every_declared_family_and_histogram_series() -> None:
    """The reference set comes from the collector: counters, gauges, histogram parts, sinks."""
    series = exported()
    assert {"eos_processed_records_total", "eos_processing_lag", "eos_sink_outage_seconds"} <= set(
        series
    )
    assert {"eos_commit_duration_seconds_bucket", "eos_commit_duration_seconds_count"} <= set(
        series
    )
    assert series["eos_processing_lag"] == {"application_id", "topic", "partition"}
    assert "eos_commit_duration_seconds" not in series  # only its _bucket/_sum/_count exist


def test_every_series_the_dashboard_names_is_exported() -> None:
    """Each panel query and template query of the dashboard selects only series eos exports."""
    exprs = dashboard_exprs()
    assert len(exprs) > 30
    assert unknown_series(exprs) == []


def test_every_series_the_alert_rules_and_their_tests_name_is_exported() -> None:
    """The alert rules and the promtool tests' input series use only exported series and labels."""
    assert unknown_series(alert_exprs()) == []
    assert unknown_series(alert_test_series()) == []


def test_alert_test_input_series_carry_every_label_of_the_real_series() -> None:
    """Each promtool input series has exactly the labels a scrape of eos would give it."""
    series = known_series()
    for where, text in alert_test_series().items():
        (selector,) = parse(text).selectors
        assert selector.name is not None
        labels = {label for label, _op, _value in selector.matchers}
        assert labels == series[selector.name] | TARGET_LABELS, where


def test_the_docs_promql_names_only_exported_series() -> None:
    """The promql blocks of docs/monitoring.md and docs/operations.md use only exported series."""
    exprs = docs_exprs()
    assert exprs, "no promql blocks found"
    assert unknown_series(exprs) == []


def test_every_panel_query_is_scoped_to_its_row_and_the_chosen_instances() -> None:
    """One row per application: every selector filters on $application_id and $instance."""
    board = dashboard()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert "label_values(eos_info, application_id)" in json.dumps(variables["application_id"])
    assert variables["instance"]["multi"] and variables["instance"]["includeAll"]
    first, *rest = board["panels"]
    assert first["type"] == "row" and first["repeat"] == "application_id"
    assert "$application_id" in first["title"]
    assert all(p["type"] != "row" for p in rest), "one repeated row: every panel is in it"
    scope = {("application_id", "=~", "$application_id"), ("instance", "=~", "$instance")}
    for where, expr in dashboard_exprs().items():
        if where.startswith("panel"):
            for selector in parse(expr).selectors:
                assert scope <= set(selector.matchers), f"{where}: {selector}"


def test_the_dashboard_is_well_formed() -> None:
    """Panels have unique ids, the templated data source, and tile the 24-column grid."""
    board = dashboard()
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    taken: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert panel["description"], panel["title"]
            assert panel["targets"], panel["title"]
    assert board["uid"] and board["title"] and board["schemaVersion"] >= 36


def test_the_dashboard_has_the_issue_panels_and_the_docs_explain_each() -> None:
    """Every panel the issue asks for exists, and docs/operations.md has a row for each panel."""
    titles = [p["title"] for p in panels()]
    assert len(titles) == len(set(titles))
    missing = [title for title in REQUIRED_PANELS if title not in titles]
    assert missing == []
    operations = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    undocumented = [title for title in titles if f"| {title} |" not in operations]
    assert undocumented == []


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_every_dashboard_expression_parses(tmp_path: Path) -> None:
    """promtool parses each dashboard expression (Grafana's variables replaced) as PromQL."""
    rules = [
        {"record": f"eos_dashboard:expr_{n}", "expr": _GRAFANA_DURATION.sub("5m", expr)}
        for n, (where, expr) in enumerate(sorted(dashboard_exprs().items()))
        if not where.endswith(" label")
    ]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        ["promtool", "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
