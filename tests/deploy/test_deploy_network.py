"""deploy/k8s fences and wiring: the NetworkPolicies allow only the paths the README lists, and
every file the configs name is mounted from a Secret or ConfigMap that exists."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import Any

import pytest

from tests.deploy._support import (
    SECRETS_EXAMPLE,
    Resource,
    all_containers,
    by_kind,
    kustomization,
    load_config_yaml,
    load_docs,
    main_container,
    one,
    pod_spec,
)

GATEWAY = {"app.kubernetes.io/name": "bastion-gateway"}
WORKER = {"app.kubernetes.io/name": "bastion-worker"}
POSTGRES = {"app.kubernetes.io/name": "bastion-postgres"}


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if set(selector) - {"matchLabels"}:
        raise AssertionError(f"only matchLabels selectors are expected here: {selector}")
    return dict(selector.get("matchLabels", {})).items() <= labels.items()


def _policies_for(labels: dict[str, str]) -> list[dict[str, Any]]:
    return [
        r.doc["spec"]
        for r in by_kind("NetworkPolicy")
        if _selects(r.doc["spec"]["podSelector"], labels)
    ]


def _peers(labels: dict[str, str], direction: str, port: int) -> list[dict[str, Any]]:
    """Every peer the policies selecting ``labels`` allow on ``port`` in ``direction``."""
    key = "from" if direction == "ingress" else "to"
    found: list[dict[str, Any]] = []
    for spec in _policies_for(labels):
        for rule in spec.get(direction, []):
            ports = [p["port"] for p in rule.get("ports", [])]
            if not ports or port in ports:
                found.extend(rule.get(key) or [{"ANY": True}])
    return found


def test_default_deny_covers_every_pod_both_ways() -> None:
    """A NetworkPolicy selects every pod for ingress and egress and allows nothing."""
    denies = [
        r.doc["spec"]
        for r in by_kind("NetworkPolicy")
        if r.doc["spec"]["podSelector"] == {}
        and set(r.doc["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        and not r.doc["spec"].get("ingress")
        and not r.doc["spec"].get("egress")
    ]
    assert len(denies) == 1


@pytest.mark.parametrize(
    "resource", by_kind("NetworkPolicy"), ids=[r.name for r in by_kind("NetworkPolicy")]
)
def test_no_rule_allows_everything(resource: Resource) -> None:
    """Every allow rule names its peers and its ports: no rule opens a pod to any address or
    any port."""
    spec = resource.doc["spec"]
    for direction, key in (("ingress", "from"), ("egress", "to")):
        for rule in spec.get(direction, []):
            assert rule.get(key), f"{resource.name}: {direction} rule without peers"
            assert rule.get("ports"), f"{resource.name}: {direction} rule without ports"


_INGRESS = [
    ("worker-api", WORKER, 8600, [{"podSelector": {"matchLabels": GATEWAY}}]),
    ("postgres", POSTGRES, 5432, [{"podSelector": {"matchLabels": GATEWAY}}]),
]


@pytest.mark.parametrize(
    ("target", "labels", "port", "expected"), _INGRESS, ids=[c[0] for c in _INGRESS]
)
def test_only_the_gateway_reaches(
    target: str, labels: dict[str, str], port: int, expected: list[dict[str, Any]]
) -> None:
    """Workers' API port and PostgreSQL accept connections from gateway pods only."""
    assert _peers(labels, "ingress", port) == expected


def test_callers_reach_only_the_gateway_api_port() -> None:
    """Client namespaces reach the gateway on 8443, and no namespace-wide peer reaches a
    worker on any port it serves requests on."""
    peers = _peers(GATEWAY, "ingress", 8443)
    assert peers
    assert all("namespaceSelector" in p and "podSelector" not in p for p in peers)
    assert all("ipBlock" not in p for p in _peers(WORKER, "ingress", 8600))


@pytest.mark.parametrize("labels", [GATEWAY, WORKER], ids=["gateway", "worker"])
def test_prometheus_scrapes_the_ops_port(labels: dict[str, str]) -> None:
    """Prometheus, and only Prometheus, may reach the ops port (9464) of gateways and workers."""
    peers = _peers(labels, "ingress", 9464)
    assert peers == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
        }
    ]


def _external_egress(labels: dict[str, str]) -> set[tuple[str, int]]:
    out = set()
    for spec in _policies_for(labels):
        for rule in spec.get("egress", []):
            blocks = [p["ipBlock"]["cidr"] for p in rule["to"] if "ipBlock" in p]
            out |= {(cidr, p["port"]) for cidr in blocks for p in rule["ports"]}
    return out


def test_only_the_gateway_leaves_for_the_managed_apis() -> None:
    """The gateway has an egress rule to an address block on 443; the worker's only external
    egress is the HSM, on a port other than 443."""
    assert any(port == 443 for _, port in _external_egress(GATEWAY))
    worker = _external_egress(WORKER)
    assert worker
    assert all(port != 443 for _, port in worker)
    assert worker <= _external_egress(GATEWAY)  # the same HSM, nothing else


def test_every_pod_may_resolve_names() -> None:
    """DNS (53/UDP and TCP) to kube-dns is allowed for every pod, or default deny breaks
    resolution of the worker and database names."""
    dns = [
        r.doc["spec"]
        for r in by_kind("NetworkPolicy")
        if r.doc["spec"]["podSelector"] == {} and r.doc["spec"].get("egress")
    ]
    assert len(dns) == 1
    (rule,) = dns[0]["egress"]
    assert {(p["protocol"], p["port"]) for p in rule["ports"]} == {("UDP", 53), ("TCP", 53)}


# -- Secrets, ConfigMaps and mounted paths -------------------------------------------------------


def _example_secrets() -> dict[str, dict[str, str]]:
    return {d["metadata"]["name"]: d["stringData"] for d in load_docs(SECRETS_EXAMPLE)}


def test_example_secrets_hold_only_placeholders() -> None:
    """Every value in secrets.example.yaml is a REPLACE_ME placeholder, never a real secret
    and never base64 `data:` that would hide one."""
    for doc in load_docs(SECRETS_EXAMPLE):
        assert "data" not in doc, doc["metadata"]["name"]
        for key, value in doc["stringData"].items():
            assert "REPLACE_ME" in value, f"{doc['metadata']['name']}/{key}"


_WORKLOADS = [
    ("Deployment", "bastion-gateway", "gateway.yaml"),
    ("StatefulSet", "bastion-worker", "worker.yaml"),
]


def _paths(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for value in node.values():
            yield from _paths(value)
    elif isinstance(node, list):
        for value in node:
            yield from _paths(value)
    elif isinstance(node, str) and node.startswith("/"):
        yield node


def _mount_for(workload: dict[str, Any], path: str) -> tuple[dict[str, Any], str]:
    """The volume holding ``path`` in the main container, and the file's key in that volume."""
    container = main_container(workload)
    volumes = {v["name"]: v for v in pod_spec(workload)["volumes"]}
    for mount in container["volumeMounts"]:
        root = PurePosixPath(mount["mountPath"])
        if PurePosixPath(path).is_relative_to(root):
            return volumes[mount["name"]], PurePosixPath(path).relative_to(root).as_posix()
    raise AssertionError(f"{path} is not under any volumeMount of {container['name']}")


@pytest.mark.parametrize(("kind", "name", "config"), _WORKLOADS, ids=[w[1] for w in _WORKLOADS])
def test_every_configured_file_is_mounted(kind: str, name: str, config: str) -> None:
    """Each absolute path in the pod's config file lies under one of its volume mounts, and a
    file from a Secret is a key that Secret has (so a renamed key cannot go unnoticed)."""
    workload = one(kind, name)
    secrets = _example_secrets()
    for path in _paths(load_config_yaml(config)):
        volume, key = _mount_for(workload, path)
        if "secret" in volume:
            assert key in secrets[volume["secret"]["secretName"]], path
        elif "configMap" in volume:
            generated = {g["name"]: g for g in kustomization()["configMapGenerator"]}
            files = [f.split("=", 1)[0] for f in generated[volume["configMap"]["name"]]["files"]]
            assert key in files, path
        else:  # the HSM client library, copied into an emptyDir by the init container
            assert "emptyDir" in volume or "persistentVolumeClaim" in volume, path


@pytest.mark.parametrize(("kind", "name", "config"), _WORKLOADS, ids=[w[1] for w in _WORKLOADS])
def test_referenced_secrets_and_configmaps_exist(kind: str, name: str, config: str) -> None:
    """Each Secret a pod mounts (unless optional) has a placeholder in secrets.example.yaml, each
    ConfigMap is generated by the kustomization, and none is mounted with subPath (which would
    freeze the policy and the CRL at their first version)."""
    workload = one(kind, name)
    generated = {g["name"] for g in kustomization()["configMapGenerator"]}
    for volume in pod_spec(workload)["volumes"]:
        if "secret" in volume and not volume["secret"].get("optional"):
            assert volume["secret"]["secretName"] in _example_secrets(), volume["name"]
        if "configMap" in volume:
            assert volume["configMap"]["name"] in generated, volume["name"]
    for container in all_containers(workload):
        assert all("subPath" not in m for m in container.get("volumeMounts", []))


@pytest.mark.parametrize(("kind", "name", "config"), _WORKLOADS, ids=[w[1] for w in _WORKLOADS])
def test_hsm_environment_matches_the_config(kind: str, name: str, config: str) -> None:
    """BASTION_HSM_MODULE, _TOKEN and _PIN_FILE in the pod say what the config's hsm section
    says, so CLI commands run in the pod use the same module, token and PIN file."""
    data = load_config_yaml(config)
    hsm = data["hsm"] if "hsm" in data else data["model"]["hsm"]
    env = {e["name"]: e["value"] for e in main_container(one(kind, name))["env"]}
    assert env["BASTION_HSM_MODULE"] == hsm["module"]
    assert env["BASTION_HSM_TOKEN"] == hsm["token"]
    assert env["BASTION_HSM_PIN_FILE"] == hsm["pin_file"]


def test_audit_dsn_names_a_service_held_in_a_secret() -> None:
    """The ConfigMap's audit DSN is only a libpq service name; PGSERVICEFILE points into the
    mounted Secret, whose service file defines that service with verify-full TLS."""
    dsn = load_config_yaml("gateway.yaml")["audit"]["dsn"]
    assert dsn.startswith("service=")
    assert " " not in dsn
    assert "password" not in dsn
    gateway = one("Deployment", "bastion-gateway")
    env = {e["name"]: e["value"] for e in main_container(gateway)["env"]}
    volume, key = _mount_for(gateway, env["PGSERVICEFILE"])
    service_file = _example_secrets()[volume["secret"]["secretName"]][key]
    assert f"[{dsn.removeprefix('service=')}]" in service_file.splitlines()
    assert "sslmode=verify-full" in service_file.splitlines()
