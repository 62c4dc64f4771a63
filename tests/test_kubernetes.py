"""The Kubernetes manifests, validated offline: core kinds against Kubernetes' own schemas
(kubernetes-validate), each KEDA ScaledObject against KEDA's CRD schema, and the workers
against the registry (every model served, its queues scaled on, scale to zero where allowed)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import annotated_types
import jsonschema
import kubernetes_validate
import pytest
import yaml

from infermq.jobs import JobRequest
from infermq.keys import QueueNames
from infermq.registry import load_registry

KUBERNETES_DIR = Path(__file__).parent.parent / "deploy" / "kubernetes"
KEDA_CRD = KUBERNETES_DIR / "vendor" / "keda.sh_scaledobjects.yaml"
KEDA_CRD_SHA256 = "af35555862a83933b074af14ad439c4b4ceabaf4daa3e9338e9b23e36d308d80"
KUBERNETES_VERSION = "1.37.0"


def manifests() -> list[dict[str, Any]]:
    return [doc for path in sorted(KUBERNETES_DIR.glob("*.yaml"))
            for doc in yaml.safe_load_all(path.read_text()) if doc]


def of_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in manifests() if doc["kind"] == kind}


def strict(schema: Any) -> Any:
    """The CRD schema as the API server applies it under strict field validation (kubectl's
    default, ``--validate=strict``): an object with declared properties refuses unknown ones,
    unless it preserves unknown fields."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    tightened = {key: strict(value) for key, value in schema.items()}
    if "properties" in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
        tightened.setdefault("additionalProperties", False)
    return tightened


def keda_schema() -> dict[str, Any]:
    crd = yaml.safe_load(KEDA_CRD.read_text())
    [version] = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    schema = dict(strict(version["schema"]["openAPIV3Schema"]))
    # metadata is ObjectMeta, which the CRD leaves to the API server: checked as an object
    schema["properties"]["metadata"] = {"type": "object"}
    return schema


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    return dict(deployment["spec"]["template"]["spec"]["containers"][0])


def worker_models(deployment: dict[str, Any]) -> list[str]:
    [models] = [arg for arg in container(deployment)["command"] if arg.startswith("--models=")]
    return models.removeprefix("--models=").split(",")


@pytest.mark.parametrize("doc", [d for d in manifests() if d["kind"] != "ScaledObject"],
                         ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_core_kinds_validate_against_kubernetes_schemas(doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_scaled_objects_validate_against_kedas_vendored_crd_schema() -> None:
    assert hashlib.sha256(KEDA_CRD.read_bytes()).hexdigest() == KEDA_CRD_SHA256
    validator = jsonschema.Draft7Validator(keda_schema())
    scaled = of_kind("ScaledObject")
    assert scaled
    for name, doc in scaled.items():
        errors = [f"{'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(doc)]
        assert errors == [], name
    # and the schema is strict enough to refuse a misspelt field
    broken = next(iter(scaled.values()))
    broken = {**broken, "spec": {**broken["spec"], "minReplicas": 0}}
    assert not validator.is_valid(broken)


def test_every_model_is_served_and_scaled_on_its_queues() -> None:
    registry = load_registry()
    namespace = of_kind("ConfigMap")["infermq-settings"]["data"]["INFERMQ_NAMESPACE"]
    names = QueueNames(namespace)
    deployments, scaled = of_kind("Deployment"), of_kind("ScaledObject")
    workers = {name: d for name, d in deployments.items()
               if d["metadata"]["labels"]["app.kubernetes.io/component"] == "worker"}
    served = [model for d in workers.values() for model in worker_models(d)]
    assert sorted(served) == sorted(registry.models)  # each model in exactly one group
    assert {"infermq-gateway", "infermq-beat", "infermq-flower"} <= set(deployments)
    assert "infermq-migrate" in of_kind("Job")
    longest_job_s = max(float(m.le) for m in JobRequest.model_fields["timeout_s"].metadata  # type: ignore[arg-type]
                        if isinstance(m, annotated_types.Le))

    route_triggers = 0
    for name, deployment in workers.items():
        specs = [registry.models[model] for model in worker_models(deployment)]
        so = scaled[name]  # a ScaledObject per worker Deployment, on that Deployment
        assert so["spec"]["scaleTargetRef"]["name"] == name
        # scale to zero only where every model of the group allows it
        assert so["spec"]["minReplicaCount"] == min(spec.min_replicas for spec in specs)
        triggers = {t["metadata"]["queueName"]: t["metadata"] for t in so["spec"]["triggers"]}
        assert all(t["type"] == "rabbitmq" for t in so["spec"]["triggers"])
        for spec in specs:
            for task_type in spec.task_types:
                queue = names.for_model(task_type.value, spec.name)
                for band in (queue, names.low_band(queue)):  # both bands wake the group
                    trigger = triggers.pop(band)
                    assert trigger["mode"] == "QueueLength"
                    assert trigger["value"] == str(spec.max_backlog)
        if names.route in triggers:  # the route queue, on the group that has the embedder
            triggers.pop(names.route)
            triggers.pop(names.low_band(names.route))
            route_triggers += 1
            assert "minilm" in worker_models(deployment)
        assert triggers == {}, f"{name} scales on queues it does not serve"
        # SIGTERM drains: time for the longest job, and readiness from the model states
        pod = deployment["spec"]["template"]["spec"]
        assert pod["terminationGracePeriodSeconds"] >= longest_job_s
        assert container(deployment)["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert route_triggers == 1
    assert any(so["spec"]["minReplicaCount"] == 0 for so in scaled.values())
