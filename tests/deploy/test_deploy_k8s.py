"""deploy/k8s: every manifest validates offline against the Kubernetes schemas (and KEDA's), the
configs load with Bastion's own loaders, and the workloads keep the promises the README makes."""

from __future__ import annotations

import copy
import json
import math
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
from ruamel.yaml import YAML

from tests.deploy._support import (
    K8S,
    K8S_VERSIONS,
    KEDA_SCHEMA,
    WORKLOAD_KINDS,
    Resource,
    all_containers,
    config_file,
    exported_metric_names,
    kustomization,
    load_config_yaml,
    load_docs,
    main_container,
    manifest_files,
    metrics_in_query,
    one,
    pod_spec,
    resources,
)

_KEDA = jsonschema.Draft202012Validator(json.loads(KEDA_SCHEMA.read_text(encoding="utf-8")))


def validate(doc: dict[str, Any], version: str) -> None:
    """Validate one object: Kubernetes kinds with kubernetes-validate (strict: unknown fields are
    errors), the KEDA ScaledObject with the schema in this folder."""
    if doc["apiVersion"].startswith("keda.sh/"):
        _KEDA.validate(doc)
        return
    kubernetes_validate.validate(doc, version, strict=True)


# -- files and parsing -------------------------------------------------------------------------


def test_every_manifest_file_is_listed_in_the_kustomization() -> None:
    """Each YAML file in deploy/k8s is applied by the kustomization (placeholder Secrets aside),
    and each listed or generated file exists."""
    listed = set(manifest_files())
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert on_disk == listed
    for generator in kustomization()["configMapGenerator"]:
        for entry in generator["files"]:
            assert (K8S / entry.split("=", 1)[1]).is_file(), entry


_ALL_YAML = sorted(p.relative_to(K8S).as_posix() for p in K8S.rglob("*.yaml"))


@pytest.mark.parametrize("name", _ALL_YAML, ids=_ALL_YAML)
def test_yaml_reads_the_same_under_yaml_1_1_and_1_2(name: str) -> None:
    """A file means the same to Kubernetes (YAML 1.1) as to Bastion's loaders (YAML 1.2): no
    `0440` octals or `yes`/`on` booleans that the two read differently."""
    with (K8S / name).open(encoding="utf-8") as handle:
        strict_12 = [d for d in YAML(typ="safe", pure=True).load_all(handle) if d]
    assert strict_12 == load_docs(K8S / name)


# -- schema validation ---------------------------------------------------------------------------

_CASES = [(r, v) for r in resources() for v in K8S_VERSIONS]


@pytest.mark.parametrize(("resource", "version"), _CASES, ids=[f"{r.id}@{v}" for r, v in _CASES])
def test_manifest_validates_against_the_schema(resource: Resource, version: str) -> None:
    """Every object validates in strict mode against the pinned Kubernetes version's schema
    (KEDA's ScaledObject against its CRD schema written from the KEDA reference)."""
    validate(resource.doc, version)


_DELETE = object()


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        node: Any = doc
        *parents, last = path.split(".")
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        if value is _DELETE:
            del node[last]
        else:
            node[int(last) if last.isdigit() else last] = value

    return mutate


_BROKEN = [
    ("Deployment", "bastion-gateway", "spec.template.spec.containers.0.readinesProbe", {}),
    ("Deployment", "bastion-gateway", "spec.replicas", "two"),
    ("StatefulSet", "bastion-worker", "spec.serviceName", _DELETE),
    (
        "StatefulSet",
        "bastion-worker",
        "spec.template.spec.containers.0.ports.0.containerPort",
        "api",
    ),
    ("HorizontalPodAutoscaler", "bastion-gateway", "spec.metrics.0.pods.target.type", 7),
    ("NetworkPolicy", "default-deny-all", "spec.podSelectr", {}),
    ("ScaledObject", "bastion-worker", "spec.minReplicas", 1),
    ("ScaledObject", "bastion-worker", "spec.triggers.0.metadata.threshold", "lots"),
    ("ScaledObject", "bastion-worker", "spec.triggers.1.metadata.query", _DELETE),
    (
        "ScaledObject",
        "bastion-worker",
        "spec.advanced.horizontalPodAutoscalerConfig.behavior.scaleDown.selectPolicy",
        "Slowest",
    ),
]


@pytest.mark.parametrize(
    ("kind", "name", "path", "value"),
    _BROKEN,
    ids=[f"{k}/{p.rsplit('.', 1)[-1]}" for k, _, p, _ in _BROKEN],
)
def test_validation_rejects_a_broken_manifest(kind: str, name: str, path: str, value: Any) -> None:
    """A misspelled field, a wrong type or a missing required field fails validation, so the
    passing runs above are not vacuous."""
    doc = copy.deepcopy(one(kind, name))
    _set(path, value)(doc)
    with pytest.raises(jsonschema.ValidationError):
        validate(doc, K8S_VERSIONS[0])


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (kustomize) is not installed")
def test_kustomize_output_validates_and_wires_the_generated_configmaps() -> None:
    """`kubectl kustomize deploy/k8s` builds offline; every rendered object validates, and the
    pods mount the generated (hash-suffixed) ConfigMaps holding the config files."""
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    docs = [d for d in YAML(typ="safe", pure=True).load_all(rendered) if d]
    assert {d["kind"] for d in docs} >= {"Deployment", "StatefulSet", "ConfigMap", "ScaledObject"}
    for doc in docs:
        validate(doc, K8S_VERSIONS[-1])
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "bastion", doc["metadata"]["name"]
    configmaps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
    assert "bastion-policy" in configmaps  # fixed name: updated in place, hot-reloaded
    expected = {"bastion-gateway-config": "gateway.yaml", "bastion-worker-config": "worker.yaml"}
    for doc in docs:
        if doc["kind"] not in WORKLOAD_KINDS:
            continue
        for volume in pod_spec(doc)["volumes"]:
            if "configMap" not in volume:
                continue
            mounted = configmaps[volume["configMap"]["name"]]
            for prefix, key in expected.items():
                if mounted["metadata"]["name"].startswith(prefix + "-"):
                    assert mounted["data"][key] == config_file(key).read_text(encoding="utf-8")


# -- the configs load with Bastion's own code --------------------------------------------------


def test_gateway_config_loads_with_the_gateway_loader() -> None:
    """config/gateway.yaml passes gateway.config.load_config, and its audit and hsm sections
    pass the audit and HSM models (PostgreSQL backend for several replicas)."""
    from gateway.audit import AuditConfig
    from gateway.config import load_config
    from pki.hsm import HsmSettings

    config = load_config(config_file("gateway.yaml"))
    assert config.audit is not None
    assert config.hsm is not None
    audit = AuditConfig.model_validate(dict(config.audit))
    assert audit.backend == "postgres"
    HsmSettings.model_validate(dict(config.hsm))
    assert config.server.ops_port == 9464
    assert config.server.ops_host == "0.0.0.0"


def test_policy_loads_and_names_only_configured_upstreams() -> None:
    """config/policy.yaml is a valid policy, and each route's upstream is defined in
    config/gateway.yaml."""
    from gateway.config import load_config
    from gateway.policy import load_policy

    policy = load_policy(config_file("policy.yaml"))
    upstreams = set(load_config(config_file("gateway.yaml")).upstreams)
    assert {route.upstream for route in policy.routes.values()} <= upstreams


def test_worker_config_loads_with_the_worker_loader() -> None:
    """config/worker.yaml passes inference.config.load_config (encrypted artifact, mTLS that
    admits only the gateway), and the StatefulSet runs it with the ops listener on the port
    its probes use."""
    from inference.config import load_config

    config = load_config(config_file("worker.yaml"))
    assert config.model.source.value == "encrypted"
    assert config.server.tls is not None
    assert config.server.tls.allowed() == {"spiffe://bastion.internal/bastion/gateway"}
    container = main_container(one("StatefulSet", "bastion-worker"))
    args = container["args"]
    assert args[:3] == ["worker", "--config", "/etc/bastion/config/worker.yaml"]
    ops = {p["containerPort"] for p in container["ports"] if p["name"] == "ops"}
    assert {int(args[args.index("--ops-port") + 1])} == ops
    assert config.server.host == "0.0.0.0"  # the ops listener binds the same host


def test_gateway_runs_its_config() -> None:
    """The gateway container runs `bastion serve` on the mounted gateway config."""
    container = main_container(one("Deployment", "bastion-gateway"))
    assert container["command"] == ["bastion"]
    assert container["args"] == ["serve", "--config", "/etc/bastion/config/gateway.yaml"]


# -- workloads ------------------------------------------------------------------------------------

_WORKLOADS = [r for r in resources() if r.kind in WORKLOAD_KINDS]
_WORKLOAD_IDS = [r.id for r in _WORKLOADS]


def _quantity(text: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(m|Ki|Mi|Gi|Ti)?", str(text))
    assert match, f"unexpected quantity {text!r}"
    scale = {None: 1, "m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    return float(match.group(1)) * scale[match.group(2)]


@pytest.mark.parametrize("resource", _WORKLOADS, ids=_WORKLOAD_IDS)
def test_every_container_has_resources(resource: Resource) -> None:
    """Each container, init containers included, requests CPU and memory and caps memory at no
    less than it requests."""
    for container in all_containers(resource.doc):
        requests = container["resources"]["requests"]
        limits = container["resources"]["limits"]
        assert _quantity(requests["cpu"]) > 0, container["name"]
        assert _quantity(limits["memory"]) >= _quantity(requests["memory"]) > 0, container["name"]


@pytest.mark.parametrize("resource", _WORKLOADS, ids=_WORKLOAD_IDS)
def test_main_container_has_probes_on_declared_ports(resource: Resource) -> None:
    """The serving container has startup, readiness (/readyz) and liveness (/healthz) probes on
    the plain ops port it declares."""
    container = main_container(resource.doc)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["ops"] == 9464
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] in ports, probe
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"


@pytest.mark.parametrize("resource", _WORKLOADS, ids=_WORKLOAD_IDS)
def test_pods_meet_the_restricted_pod_security_profile(resource: Resource) -> None:
    """Non-root, RuntimeDefault seccomp, no privilege escalation, read-only root FS, all
    capabilities dropped, no host namespaces or hostPath, no API token."""
    spec = pod_spec(resource.doc)
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] > 0
    assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert spec["automountServiceAccountToken"] is False
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        assert not spec.get(key), key
    assert all("hostPath" not in v for v in spec["volumes"])
    for container in all_containers(resource.doc):
        context = container["securityContext"]
        assert context["runAsNonRoot"] is True, container["name"]
        assert context["allowPrivilegeEscalation"] is False, container["name"]
        assert context["readOnlyRootFilesystem"] is True, container["name"]
        assert context["capabilities"]["drop"] == ["ALL"], container["name"]
        assert "add" not in context["capabilities"], container["name"]
        assert not context.get("privileged"), container["name"]


def test_namespace_enforces_the_restricted_profile() -> None:
    """Pod Security Admission enforces `restricted` in the bastion namespace."""
    labels = one("Namespace", "bastion")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_worker_runs_on_a_gpu_node_with_one_gpu() -> None:
    """The worker requests and limits exactly one nvidia.com/gpu, selects GPU nodes and
    tolerates their taint."""
    worker = one("StatefulSet", "bastion-worker")
    resources_ = main_container(worker)["resources"]
    assert resources_["requests"]["nvidia.com/gpu"] == resources_["limits"]["nvidia.com/gpu"] == "1"
    spec = pod_spec(worker)
    assert spec["nodeSelector"]
    assert any(t["key"] == "nvidia.com/gpu" for t in spec["tolerations"])
    gateway = main_container(one("Deployment", "bastion-gateway"))["resources"]
    assert "nvidia.com/gpu" not in gateway["requests"]


def test_gateway_is_highly_available() -> None:
    """At least two gateways (Deployment and HPA floor), rolled without losing capacity, and a
    PodDisruptionBudget over them."""
    deployment = one("Deployment", "bastion-gateway")
    assert deployment["spec"]["replicas"] >= 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert one("HorizontalPodAutoscaler", "bastion-gateway")["spec"]["minReplicas"] >= 2
    pdb = one("PodDisruptionBudget", "bastion-gateway")
    assert pdb["spec"]["selector"] == deployment["spec"]["selector"]


_SELECTING = [
    ("Service", "bastion-gateway", "Deployment", "bastion-gateway"),
    ("Service", "bastion-worker", "StatefulSet", "bastion-worker"),
    ("PodDisruptionBudget", "bastion-worker", "StatefulSet", "bastion-worker"),
]


@pytest.mark.parametrize(
    ("kind", "name", "target_kind", "target"),
    _SELECTING,
    ids=[f"{k}/{n}" for k, n, _, _ in _SELECTING],
)
def test_selectors_match_their_pods(kind: str, name: str, target_kind: str, target: str) -> None:
    """Services and PDBs select the pods they are meant for, and Service ports name container
    ports that exist."""
    doc = one(kind, name)
    workload = one(target_kind, target)
    labels = workload["spec"]["template"]["metadata"]["labels"]
    selector = doc["spec"]["selector"]
    selector = selector.get("matchLabels", selector)
    assert selector.items() <= labels.items()
    ports = {p["name"] for p in main_container(workload)["ports"]}
    for port in doc["spec"].get("ports", []):
        assert port["targetPort"] in ports


# -- startup budget and autoscaling ---------------------------------------------------------------


def _expected_ready_seconds() -> int:
    annotations = one("StatefulSet", "bastion-worker")["metadata"]["annotations"]
    return int(annotations["bastion.example/expected-ready-seconds"])


def test_startup_probe_allows_twice_the_expected_ready_time() -> None:
    """failureThreshold x periodSeconds of the worker's startup probe covers at least twice the
    measured load + warm-up time recorded in the StatefulSet annotation."""
    probe = main_container(one("StatefulSet", "bastion-worker"))["startupProbe"]
    assert probe["httpGet"]["path"] == "/readyz"
    assert probe["failureThreshold"] * probe["periodSeconds"] >= 2 * _expected_ready_seconds()


def test_worker_scaling_is_fast_up_and_slow_down() -> None:
    """KEDA scales the worker StatefulSet up with no stabilization and down only after a window
    of at least twice the load + warm-up time; new replicas start in parallel."""
    scaled = one("ScaledObject", "bastion-worker")["spec"]
    worker = one("StatefulSet", "bastion-worker")
    assert scaled["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "name": worker["metadata"]["name"],
    }
    behavior = scaled["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleUp"]["stabilizationWindowSeconds"] == 0
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] >= 2 * _expected_ready_seconds()
    assert max(p["value"] for p in behavior["scaleUp"]["policies"] if p["type"] == "Pods") >= 2
    assert scaled["pollingInterval"] <= 15
    assert scaled["minReplicaCount"] >= 1
    assert worker["spec"]["podManagementPolicy"] == "Parallel"


_CAPACITY = {
    "bastion_worker_num_requests_running": "max_batch_size",
    "bastion_worker_queue_tokens": "max_queue_tokens",
}


def test_worker_triggers_watch_queue_metrics_below_capacity() -> None:
    """Every trigger queries metrics the worker exports, one watches requests waiting, and each
    threshold on a bounded quantity sits below the worker's configured capacity."""
    triggers = one("ScaledObject", "bastion-worker")["spec"]["triggers"]
    batching = load_config_yaml("worker.yaml")["batching"]
    watched: set[str] = set()
    for trigger in triggers:
        metrics = metrics_in_query(trigger["metadata"]["query"])
        assert metrics, trigger["metadata"]["query"]
        assert metrics <= exported_metric_names(), metrics
        watched |= metrics
        for metric in metrics & _CAPACITY.keys():
            assert float(trigger["metadata"]["threshold"]) < batching[_CAPACITY[metric]]
    assert "bastion_worker_num_requests_waiting" in watched


def test_gateway_lists_one_worker_url_per_possible_replica() -> None:
    """The gateway's on-prem pool names bastion-worker-0..N-1 through the headless Service on
    the worker's API port, N being the ScaledObject's maxReplicaCount."""
    gateway = load_config_yaml("gateway.yaml")
    worker = one("StatefulSet", "bastion-worker")
    service = one("Service", "bastion-worker")
    assert service["spec"]["clusterIP"] == "None"
    assert worker["spec"]["serviceName"] == service["metadata"]["name"]
    port = load_config_yaml("worker.yaml")["server"]["port"]
    assert {p["containerPort"] for p in main_container(worker)["ports"] if p["name"] == "api"} == {
        port
    }
    count = one("ScaledObject", "bastion-worker")["spec"]["maxReplicaCount"]
    expected = [
        f"https://bastion-worker-{i}.bastion-worker.bastion.svc.cluster.local:{port}/v1"
        for i in range(count)
    ]
    assert gateway["upstreams"]["worker"]["base_url"] == expected


def test_gateway_hpa_metric_is_served_by_the_adapter_rule() -> None:
    """The HPA's Pods metric is exactly the name the Prometheus adapter rule derives from a
    counter the gateway exports."""
    values = load_docs(K8S / "monitoring" / "prometheus-adapter-values.yaml")[0]
    (rule,) = values["rules"]["custom"]
    (series,) = metrics_in_query(rule["seriesQuery"])
    assert series in exported_metric_names()
    derived = re.sub(rule["name"]["matches"], rule["name"]["as"].replace("${1}", r"\1"), series)
    hpa = one("HorizontalPodAutoscaler", "bastion-gateway")["spec"]
    pods = [m["pods"]["metric"]["name"] for m in hpa["metrics"] if m["type"] == "Pods"]
    assert pods == [derived]
    assert hpa["scaleTargetRef"]["name"] == "bastion-gateway"
    assert hpa["behavior"]["scaleDown"]["stabilizationWindowSeconds"] > 0


def test_probe_budgets_are_whole_seconds() -> None:
    """Probe timing fields are positive integers (the API rejects fractions), and the gateway's
    startup budget allows at least a minute for Presidio and spaCy to load."""
    for resource in _WORKLOADS:
        container = main_container(resource.doc)
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            for field in ("periodSeconds", "failureThreshold", "timeoutSeconds"):
                value = container[probe][field]
                assert isinstance(value, int), (resource.id, probe, field)
                assert value >= 1, (resource.id, probe, field)
    probe = main_container(one("Deployment", "bastion-gateway"))["startupProbe"]
    assert math.prod((probe["periodSeconds"], probe["failureThreshold"])) >= 60


def test_shipped_policy_is_the_default_policy() -> None:
    """deploy/k8s/config/policy.yaml is a copy of policies/default.yaml: same content hash."""
    from gateway.policy import load_policy

    root = Path(__file__).resolve().parents[2]
    shipped = load_policy(root / "deploy" / "k8s" / "config" / "policy.yaml")
    default = load_policy(root / "policies" / "default.yaml")
    assert shipped.version == default.version
