"""deploy/grafana/bastion.json: a well-formed dashboard whose every query names series that
Bastion actually exports (read from gateway/ and inference/), covering what issue #9 asks for."""

from __future__ import annotations

from typing import Any

import pytest

from tests.deploy._support import (
    exported_metric_names,
    load_dashboard,
    metric_names_in_source,
    metrics_in_query,
)

_DASHBOARD = load_dashboard()
_PANELS = [p for p in _DASHBOARD["panels"] if p["type"] != "row"]
_PANEL_IDS = [p["title"] for p in _PANELS]


def test_dashboard_identity_and_variables() -> None:
    """The dashboard has a stable uid, a title, a schema version, and a Prometheus data source
    variable that every panel and query uses (so it imports into any Grafana)."""
    assert _DASHBOARD["uid"] == "bastion-overview"
    assert _DASHBOARD["title"]
    assert _DASHBOARD["schemaVersion"] >= 36
    variables = {v["name"]: v for v in _DASHBOARD["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    source = {"type": "prometheus", "uid": "${datasource}"}
    for panel in _PANELS:
        assert panel["datasource"] == source, panel["title"]
        assert all(t["datasource"] == source for t in panel["targets"]), panel["title"]


def test_panel_ids_are_unique_and_panels_do_not_overlap() -> None:
    """Panel ids are unique and no two panels share a grid cell within the 24-column grid."""
    panels = _DASHBOARD["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    taken: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0, panel["title"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & taken, panel["title"]
        taken |= cells


@pytest.mark.parametrize("panel", _PANELS, ids=_PANEL_IDS)
def test_every_query_names_an_exported_metric(panel: dict[str, Any]) -> None:
    """Each query of each panel names at least one Bastion series, and each series it names is
    one the gateway or the worker exports; parentheses and braces balance."""
    assert panel["targets"], panel["title"]
    refs = [t["refId"] for t in panel["targets"]]
    assert len(set(refs)) == len(refs)
    for target in panel["targets"]:
        expr = target["expr"]
        metrics = metrics_in_query(expr)
        assert metrics, expr
        assert metrics <= exported_metric_names(), sorted(metrics - exported_metric_names())
        for opening, closing in ("()", "{}", "[]"):
            assert expr.count(opening) == expr.count(closing), expr


_REQUIRED = {
    "routes and denials": {"bastion_requests_total", "bastion_policy_denials_total"},
    "latency per step": {"bastion_step_duration_seconds_bucket"},
    "queue depth": {"bastion_worker_num_requests_waiting", "bastion_worker_queue_tokens"},
    "TTFT and ITL": {
        "bastion_worker_time_to_first_token_seconds_bucket",
        "bastion_worker_inter_token_latency_seconds_bucket",
    },
    "KV-cache use": {"bastion_worker_kv_cache_usage_ratio"},
    "GPU memory": {"bastion_worker_gpu_memory_used_bytes"},
    "kernel time": {"bastion_worker_cuda_forward_kernel_seconds_bucket"},
    "audit health": {"bastion_audit_write_failures_total"},
    "load and warm-up": {"bastion_worker_model_load_seconds", "bastion_worker_warmup_seconds"},
}


@pytest.mark.parametrize("topic", sorted(_REQUIRED), ids=sorted(_REQUIRED))
def test_dashboard_covers_the_topic(topic: str) -> None:
    """Each topic the issue lists has panels querying its series."""
    used = {m for p in _PANELS for t in p["targets"] for m in metrics_in_query(t["expr"])}
    assert _REQUIRED[topic] <= used


def test_gpu_memory_panel_shows_p50_p90_p99() -> None:
    """The GPU memory panel plots the worker's 0.5, 0.9 and 0.99 quantile series."""
    (panel,) = [p for p in _PANELS if "bastion_worker_gpu_memory_used_bytes" in str(p["targets"])]
    exprs = " ".join(t["expr"] for t in panel["targets"])
    for quantile in ('"0.5"', '"0.9"', '"0.99"'):
        assert f"quantile={quantile}" in exprs


_SOURCES = [
    ("counter", 'c = Counter("bastion_x", "h")', {"bastion_x_total", "bastion_x_created"}),
    (
        "counter-total-suffix",
        'Counter("bastion_x_total", "h")',
        {"bastion_x_total", "bastion_x_created"},
    ),
    ("gauge-prefix-constant", '_P = "bastion_w_"\nGauge(_P + "ready", "h")', {"bastion_w_ready"}),
    (
        "histogram-keyword",
        'prometheus_client.Histogram(name="bastion_h", documentation="h")',
        {"bastion_h_bucket", "bastion_h_sum", "bastion_h_count", "bastion_h_created"},
    ),
    ("family-fstring", 'P = "bastion_"\nGaugeMetricFamily(f"{P}gpu", "h")', {"bastion_gpu"}),
    ("dynamic-name-ignored", "Gauge(name_from_config(), 'h')", set()),
]


@pytest.mark.parametrize(("case", "source", "expected"), _SOURCES, ids=[s[0] for s in _SOURCES])
def test_metric_names_are_read_from_source(case: str, source: str, expected: set[str]) -> None:
    """The source reader turns prometheus_client definitions into the series names Prometheus
    sees (counters gain _total, histograms _bucket/_sum/_count), so the check above is exact."""
    assert metric_names_in_source(source) == expected


def test_an_unknown_metric_is_not_exported() -> None:
    """A misspelled series name is not among the exported names (the coverage check can fail)."""
    assert "bastion_requests_total" in exported_metric_names()
    assert "bastion_request_total" not in exported_metric_names()
    assert "bastion_worker_forward_kernel_seconds_bucket" not in exported_metric_names()
