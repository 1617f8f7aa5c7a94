"""The Grafana dashboard the chart ships (dashboards/dcu-dra.json, ``dashboards.enabled``).

Every PromQL expression may name only metrics the daemon really exports: the names come from
a scrape of ``DriverMetrics`` (not from a hand-kept list), so renaming a metric without the
dashboard fails here. The checker strips what PromQL allows besides metric names (functions,
keywords, label matchers, grouping labels, ranges, numbers, Grafana variables) and treats every
identifier left as a metric name.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.deploy.test_helm_chart import CHART_DIR, Chart, find
from tests.test_metrics import checked_node_metrics

DASHBOARD_FILE = CHART_DIR / "dashboards" / "dcu-dra.json"
DASHBOARD = json.loads(DASHBOARD_FILE.read_text())

#: PromQL functions and aggregations the dashboard may call, plus Grafana's label_values().
FUNCTIONS = frozenset(
    {
        "abs",
        "avg",
        "avg_over_time",
        "clamp_max",
        "clamp_min",
        "count",
        "histogram_quantile",
        "increase",
        "irate",
        "label_values",
        "max",
        "max_over_time",
        "min",
        "rate",
        "sort_desc",
        "sum",
        "topk",
        "vector",
    }
)
#: PromQL keywords that are not followed by a parenthesis.
KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset"})

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_VARIABLE = re.compile(r"\$\{?\w+\}?")
_NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")
_IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*(?=\s*(\()?)")


def exported_metric_names(mock_root: Path) -> set[str]:
    """The series names of a scrape of a daemon with DCUs, usage and health (no ``_created``:
    the daemon turns those off)."""
    metrics = checked_node_metrics(mock_root)
    names: set[str] = set()
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names.update(f"{family.name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
        else:
            names.add(family.name)
    return {name for name in names if not name.endswith("_created")}


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects; ValueError for a function we do not know."""
    text = _STRING.sub('""', expr)
    for pattern in (_MATCHERS, _RANGE, _GROUPING, _VARIABLE, _NUMBER):
        text = pattern.sub(" ", text)
    found: set[str] = set()
    label_values_args = re.fullmatch(r"\s*label_values\(\s*(\w+)\s*,\s*\w+\s*\)\s*", text)
    if label_values_args:  # Grafana's label_values(metric, label): the label is not a metric
        return {label_values_args.group(1)}
    for match in _IDENTIFIER.finditer(text):
        name, is_call = match.group(0), match.group(1) is not None
        if is_call:
            if name not in FUNCTIONS:
                raise ValueError(f"unknown function {name}() in {expr!r}")
        elif name not in KEYWORDS:
            found.add(name)
    return found


def expressions(dashboard: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) of every panel target and every templating query."""
    for panel in dashboard["panels"]:
        for nested in [panel, *panel.get("panels", [])]:
            for target in nested.get("targets", []):
                yield f"panel {nested['title']!r} {target['refId']}", target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            yield (
                f"variable {variable['name']}",
                query["query"] if isinstance(query, dict) else query,
            )


def test_every_expression_names_only_exported_metrics(mock_root: Path) -> None:
    exported = exported_metric_names(mock_root)
    used: dict[str, set[str]] = {
        where: metric_names(expr) for where, expr in expressions(DASHBOARD)
    }
    unknown = {where: names - exported for where, names in used.items() if names - exported}
    assert unknown == {}
    assert all(used.values()), "every expression selects at least one metric"


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        (
            'histogram_quantile(0.99, sum by (le) (rate(x_bucket{i=~"$i"}[$__rate_interval])))',
            {"x_bucket"},
        ),
        ('count(a{instance=~"$instance"} == 0) or vector(0)', {"a"}),
        ("sum(a) / sum(b)", {"a", "b"}),
        ("label_values(a, instance)", {"a"}),
    ],
    ids=["quantile", "or-vector", "ratio", "label-values"],
)
def test_the_checker_finds_the_metric_names(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_the_checker_refuses_an_unknown_function() -> None:
    with pytest.raises(ValueError, match=r"^unknown function predict_linear\(\) in "):
        metric_names("predict_linear(a[1h], 3600)")


def test_the_dashboard_has_the_panels_the_issue_asks_for() -> None:
    """Prepare/unprepare latency and errors, devices and health, prepared shares per card,
    orphans cleaned, publish errors."""
    used = set().union(*(metric_names(expr) for _, expr in expressions(DASHBOARD)))
    for metric in (
        "dcu_dra_prepare_duration_seconds_bucket",
        "dcu_dra_unprepare_duration_seconds_bucket",
        "dcu_dra_prepare_errors_total",
        "dcu_dra_unprepare_errors_total",
        "dcu_dra_device_capacity_cores",
        "dcu_dra_device_healthy",
        "dcu_dra_device_unhealthy_reason",
        "dcu_dra_device_shares",
        "dcu_dra_orphans_cleaned_total",
        "dcu_dra_publish_errors_total",
    ):
        assert metric in used, metric
    titles = [p["title"] for p in DASHBOARD["panels"]]
    assert len(titles) == len(set(titles)), "panel titles are unique"
    ids = [p["id"] for p in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    assert DASHBOARD["uid"] == "dcu-dra-driver"


def test_every_panel_reads_the_chosen_data_source() -> None:
    for panel in DASHBOARD["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert all("$instance" in t["expr"] for t in panel["targets"]), panel["title"]


# --- the chart ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chart(helm_binary: Path, tmp_path_factory: pytest.TempPathFactory) -> Chart:
    return Chart(helm_binary, tmp_path_factory.mktemp("helm-home"))


def test_the_chart_ships_the_dashboard_for_the_grafana_sidecar(chart: Chart) -> None:
    objects = chart.template(
        "--set",
        "dashboards.enabled=true",
        "--set",
        "dashboards.annotations.grafana_folder=DCU",
    )
    config_map = find(objects, "ConfigMap", "dcu-dra-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "DCU"}
    assert config_map["metadata"]["namespace"] == "dcu-dra"
    assert json.loads(config_map["data"]["dcu-dra.json"]) == DASHBOARD


def test_the_sidecar_label_and_namespace_are_configurable(chart: Chart) -> None:
    objects = chart.template(
        "--set",
        "dashboards.enabled=true",
        "--set",
        "dashboards.label=dashboards.example.com/grafana",
        "--set",
        "dashboards.labelValue=dcu",
        "--set",
        "dashboards.namespace=monitoring",
    )
    meta = find(objects, "ConfigMap", "dcu-dra-dashboard")["metadata"]
    assert meta["labels"]["dashboards.example.com/grafana"] == "dcu"
    assert meta["namespace"] == "monitoring"


def test_the_dashboard_is_off_by_default(chart: Chart) -> None:
    assert not [o for o in chart.template() if o["metadata"]["name"] == "dcu-dra-dashboard"]


def test_a_dashboard_without_metrics_is_refused(chart: Chart) -> None:
    stderr = chart.template_error(
        "--set", "dashboards.enabled=true", "--set", "metrics.enabled=false"
    )
    assert "dashboards.enabled is true but metrics.enabled is false" in stderr
