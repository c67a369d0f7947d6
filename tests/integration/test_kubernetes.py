"""deploy/kubernetes, checked without a cluster (issue 15).

- Every core resource against Kubernetes' own OpenAPI schemas (``kubernetes-validate``,
  offline, strict: an unknown field fails).
- What a schema cannot see: the ConfigMap's deploy.toml loads as Conveyor's settings; each
  queue (and the GPU variant) has a worker Deployment consuming it and a ScaledObject
  scaling it; GPU pods ask for one GPU; probes hit /readyz and /healthz on the API's port.
- KEDA's trigger against the real API: the URL path and ``valueLocation`` of each
  ScaledObject, read from a running API with an admin key, give that queue's depth.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from conveyor.settings import all_queues, load_settings
from tests.support import Stack, invoke, make_key, write_function

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
KUBERNETES = "1.30.0"
KEDA = "keda.sh/v1alpha1"


def documents() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((ROOT / "kustomization.yaml").read_text())
    found = []
    for name in kustomization["resources"]:
        found += [d for d in yaml.safe_load_all((ROOT / name).read_text()) if d]
    return found


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in documents() if d["kind"] == kind]


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    [only] = deployment["spec"]["template"]["spec"]["containers"]
    return only  # type: ignore[no-any-return]


def settings_in(tmp_path: Path) -> Any:
    [config] = of_kind("ConfigMap")
    path = tmp_path / "deploy.toml"
    path.write_text(config["data"]["deploy.toml"])
    return load_settings(path)


def test_core_resources_match_kubernetes_schemas() -> None:
    core = [d for d in documents() if d["apiVersion"] != KEDA]
    assert {d["kind"] for d in core} == {"Namespace", "ConfigMap", "Deployment", "Service"}
    for doc in core:
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)
    # The validator does fail: a misspelt field in a Deployment.
    broken = copy.deepcopy(of_kind("Deployment")[0])
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES, strict=True)


def test_every_queue_has_workers_and_a_scaler(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    assert settings.redis.sentinels and settings.redis.min_replicas >= 1
    assert settings.api.auth == "keys"  # it listens beyond loopback
    deployments = {d["metadata"]["name"]: d for d in of_kind("Deployment")}
    consumed: dict[str, str] = {}
    for name, deployment in deployments.items():
        args = container(deployment)["args"]
        if args[0] != "worker":
            continue
        queues = args[args.index("--queues") + 1].split(",")
        if "--gpus" in args:
            limits = container(deployment)["resources"]["limits"]
            assert limits["nvidia.com/gpu"] == 1, name
            assert args[args.index("--gpus") + 1] == "0"  # the pod's one device
            queues = [f"{q}.gpu" for q in queues]
        for queue in queues:
            consumed[queue] = name
    assert set(consumed) <= set(all_queues(settings))
    assert set(settings.queues) <= set(consumed), "a queue no worker Deployment consumes"

    auth = {d["metadata"]["name"]: d for d in of_kind("TriggerAuthentication")}
    scaled = {d["spec"]["scaleTargetRef"]["name"]: d for d in of_kind("ScaledObject")}
    assert set(scaled) == set(consumed.values())
    for queue, deployment in consumed.items():
        [trigger] = scaled[deployment]["spec"]["triggers"]
        assert trigger["type"] == "metrics-api"
        assert trigger["authenticationRef"]["name"] in auth
        metadata = trigger["metadata"]
        assert all(isinstance(v, str) for v in metadata.values()), "KEDA takes strings"
        assert metadata["valueLocation"] == f"queues.{queue}.depth"
        assert metadata["url"].startswith("http://conveyor-api.")
        assert metadata["authMode"] == "bearer"
        assert float(metadata["targetValue"]) > 0
    for item in auth.values():
        [ref] = item["spec"]["secretTargetRef"]
        assert ref["parameter"] == "token"  # what bearer authMode reads


def test_api_probes_and_service(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    [api] = [d for d in of_kind("Deployment") if container(d)["args"] == ["api"]]
    [service] = of_kind("Service")
    ports = {p["name"]: p["containerPort"] for p in container(api)["ports"]}
    assert ports["http"] == settings.api.port
    assert container(api)["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container(api)["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert service["spec"]["selector"] == api["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    for deployment in of_kind("Deployment"):
        env = {e["name"] for e in container(deployment)["env"]}
        assert {"CONVEYOR_CONFIG", "CONVEYOR_REDIS__PASSWORD"} <= env
        mounts = {m["mountPath"] for m in container(deployment)["volumeMounts"]}
        assert "/etc/conveyor" in mounts
        if container(deployment)["args"][0] == "worker":
            assert str(settings.store.cache_dir) in mounts  # writable: an emptyDir


def test_keda_trigger_reads_the_queue_depth(make_stack) -> None:  # type: ignore[no-untyped-def]
    """What KEDA would GET, from a real API: the depth of the queue, all priorities."""
    stack: Stack = make_stack()
    stack.set_settings("api", auth='"keys"')
    write_function(
        stack.functions, "echo", "def run(x: int) -> int:\n    return x\n",
        '[function]\nhandler = "handler:run"\n',
    )  # fmt: skip
    admin = make_key(stack, "keda", "admin")
    caller = make_key(stack, "app", "invoke:*")
    [trigger] = of_kind("ScaledObject")[1]["spec"]["triggers"]  # the default queue's
    path = "/" + trigger["metadata"]["url"].split("/", 3)[3]
    location = trigger["metadata"]["valueLocation"].split(".")
    with stack.api() as api:
        for priority in (0, 5, 9):  # no worker: they wait, on three priority lists
            api.headers["Authorization"] = f"Bearer {caller}"
            status, body = invoke(api, "echo", priority, priority=priority)
            assert status == 202, body
        api.headers["Authorization"] = f"Bearer {caller}"
        assert api.get(path).status_code == 403  # an invoke key may not read it
        api.headers["Authorization"] = f"Bearer {admin}"
        answer = api.get(path)
    assert answer.status_code == 200, answer.text
    value: Any = answer.json()
    for step in location:
        value = value[step]
    assert value == 3
    assert answer.json()["queues"]["realtime"]["depth"] == 0
