"""Shared readers for the deploy tests: manifests, kustomization, and the metric names Bastion
exports (found by reading the source, so a dashboard query cannot name a metric nobody emits)."""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
DASHBOARD = REPO / "deploy" / "grafana" / "bastion.json"
KEDA_SCHEMA = Path(__file__).resolve().parent / "keda_scaledobject.schema.json"
SECRETS_EXAMPLE = K8S / "secrets.example.yaml"

# Oldest Kubernetes these manifests claim (README: preStop.sleep is on by default from 1.30)
# and the newest whose schemas the pinned kubernetes-validate carries.
K8S_VERSIONS = ("1.30", "1.37")

WORKLOAD_KINDS = frozenset({"Deployment", "StatefulSet"})


@dataclass(frozen=True)
class Resource:
    file: str
    doc: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.doc["kind"])

    @property
    def name(self) -> str:
        return str(self.doc["metadata"]["name"])

    @property
    def id(self) -> str:
        return f"{self.file}:{self.kind}/{self.name}"


def load_docs(path: Path) -> list[dict[str, Any]]:
    """All non-empty YAML documents of a file, parsed as Kubernetes does (YAML 1.1)."""
    with path.open(encoding="utf-8") as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc]


@cache
def kustomization() -> dict[str, Any]:
    docs = load_docs(K8S / "kustomization.yaml")
    return docs[0]


def manifest_files() -> list[str]:
    """Files kustomization.yaml lists, plus the placeholder Secrets it leaves out on purpose."""
    listed = [str(name) for name in kustomization()["resources"]]
    return [*listed, SECRETS_EXAMPLE.name]


@cache
def resources() -> tuple[Resource, ...]:
    out = []
    for name in manifest_files():
        for doc in load_docs(K8S / name):
            out.append(Resource(name, doc))
    return tuple(out)


def by_kind(kind: str) -> list[Resource]:
    return [r for r in resources() if r.kind == kind]


def one(kind: str, name: str) -> dict[str, Any]:
    found = [r.doc for r in resources() if r.kind == kind and r.name == name]
    if len(found) != 1:
        raise LookupError(f"expected one {kind}/{name} in deploy/k8s, found {len(found)}")
    return found[0]


def config_file(name: str) -> Path:
    return K8S / "config" / name


def load_config_yaml(name: str) -> dict[str, Any]:
    docs = load_docs(config_file(name))
    return docs[0]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def all_containers(workload: dict[str, Any]) -> Iterator[dict[str, Any]]:
    spec = pod_spec(workload)
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


def main_container(workload: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = pod_spec(workload)["containers"]
    if len(containers) != 1:
        raise LookupError(f"expected one main container, found {len(containers)}")
    return containers[0]


def load_dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


# -- metric names Bastion exports -----------------------------------------------------------

_METRIC_CALLS = {
    "Counter": ("_total", "_created"),
    "CounterMetricFamily": ("_total", "_created"),
    "Gauge": ("",),
    "GaugeMetricFamily": ("",),
    "Histogram": ("_bucket", "_sum", "_count", "_created"),
    "HistogramMetricFamily": ("_bucket", "_sum", "_count", "_created"),
    "Summary": ("", "_sum", "_count", "_created"),
    "SummaryMetricFamily": ("", "_sum", "_count", "_created"),
    "Info": ("_info",),
    "InfoMetricFamily": ("_info",),
}


def _string_value(node: ast.expr, constants: dict[str, str]) -> str | None:
    """The string an expression evaluates to, when it is built from literals and module constants."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        return constants.get(node.id)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left = _string_value(node.left, constants)
        right = _string_value(node.right, constants)
        return None if left is None or right is None else left + right
    if isinstance(node, ast.JoinedStr):
        parts = []
        for value in node.values:
            if isinstance(value, ast.FormattedValue):
                part = _string_value(value.value, constants)
            else:
                part = _string_value(value, constants)
            if part is None:
                return None
            parts.append(part)
        return "".join(parts)
    return None


def metric_names_in_source(source: str) -> set[str]:
    """Series names a module exports through prometheus_client (Counter -> NAME_total, ...)."""
    tree = ast.parse(source)
    constants: dict[str, str] = {}
    for statement in tree.body:
        if isinstance(statement, ast.Assign) and len(statement.targets) == 1:
            target = statement.targets[0]
            value = _string_value(statement.value, constants)
            if isinstance(target, ast.Name) and value is not None:
                constants[target.id] = value
    names: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
        if called not in _METRIC_CALLS:
            continue
        arg = node.args[0] if node.args else None
        for keyword in node.keywords:
            if keyword.arg == "name":
                arg = keyword.value
        base = _string_value(arg, constants) if arg is not None else None
        if base is None:
            continue
        if called.startswith("Counter"):
            base = base.removesuffix("_total")
        names.update(base + suffix for suffix in _METRIC_CALLS[called])
    return names


@cache
def exported_metric_names() -> frozenset[str]:
    """Every series name defined in gateway/ and inference/."""
    names: set[str] = set()
    for package in ("gateway", "inference"):
        for path in sorted((REPO / package).rglob("*.py")):
            names |= metric_names_in_source(path.read_text(encoding="utf-8"))
    return frozenset(names)


_METRIC_RE = re.compile(r"\bbastion_[a-z0-9_]+\b")


def metrics_in_query(expr: str) -> set[str]:
    return set(_METRIC_RE.findall(expr))
