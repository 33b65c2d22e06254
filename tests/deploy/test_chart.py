"""The Helm chart (charts/graft), rendered by the real Helm engine, checked without a cluster.

Helm v4 comes from PyPI ``helm-python-sdk`` (import ``helm_python``): render, lint and
values.schema.json validation run in-process. Rendered core objects are validated against the
Kubernetes OpenAPI schemas with ``kubernetes-validate`` (strict: unknown fields are errors);
RayCluster/RayJob against the KubeRay CRD schemas in ``../shared/crds/kuberay`` with
``jsonschema``, tightened so that an unknown field fails as it would under server-side strict
field validation. Nothing here is applied to a cluster.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from pod_security import restricted_violations

helm = pytest.importorskip("helm_python", reason="helm-python-sdk is not installed")
kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="kubernetes-validate is not installed"
)

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "graft"
KUBE_VERSION = "1.32.0"  # the kindest/node image in infra/kind-cluster.yaml
RELEASE = "graft"
NAMESPACE = "graft"

Obj = dict[str, Any]


def _production_values() -> Obj:
    values: Obj = yaml.safe_load((CHART / "values-production.yaml").read_text())
    return values


def _merge(base: Obj, override: Obj) -> Obj:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


# Value sets rendered by every structural test: the defaults, production, and every optional
# template switched on (RayJob, GPU workers, autoscaler, the model server) on top of the
# defaults.
VALUE_SETS: dict[str, Obj] = {
    "default": {},
    "production": _production_values(),
    "all-optional": {
        "rayJob": {"enabled": True},
        "rayCluster": {"enableInTreeAutoscaling": True, "gpuWorkers": {"enabled": True}},
        "serving": {"enabled": True},
    },
}


def render(values: Obj | None = None) -> dict[str, str]:
    with helm.Chart.load(CHART) as chart:
        manifests: dict[str, str] = chart.render(
            values or {}, name=RELEASE, namespace=NAMESPACE, is_install=True
        )
    return manifests


def objects(manifests: dict[str, str]) -> list[Obj]:
    out: list[Obj] = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        out.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return out


@pytest.fixture(scope="module", params=sorted(VALUE_SETS), ids=sorted(VALUE_SETS))
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[Obj], dict[str, str]]:
    manifests = render(VALUE_SETS[request.param])
    return request.param, objects(manifests), manifests


def by_kind(objs: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objs if o["kind"] == kind]


def one(objs: list[Obj], kind: str, name: str | None = None) -> Obj:
    found = [o for o in by_kind(objs, kind) if name is None or o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def pod_specs(node: Any) -> Iterator[Obj]:
    """Every pod spec (a dict holding `containers`) anywhere inside a rendered object."""
    if isinstance(node, dict):
        if isinstance(node.get("containers"), list):
            yield node
        for value in node.values():
            yield from pod_specs(value)
    elif isinstance(node, list):
        for item in node:
            yield from pod_specs(item)


def containers(obj: Obj) -> Iterator[tuple[Obj, Obj]]:
    for spec in pod_specs(obj):
        for container in spec["containers"] + spec.get("initContainers", []):
            yield spec, container


# --- Helm engine: lint, schema ------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_helm_lint_strict_has_no_warnings(name: str) -> None:
    report = helm.lint(
        CHART, VALUE_SETS[name], strict=True, namespace=NAMESPACE, kube_version=KUBE_VERSION
    )
    assert report["errors"] == []
    # severity: 1 info (e.g. "icon is recommended"), 2 warning, 3 error
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"mlflow": {"replicas": "two"}}, "/mlflow/replicas"),
        ({"rayCluster": {"cpuWorkers": {"maxReplicas": -1}}}, "/rayCluster/cpuWorkers"),
        ({"securityContext": {"runAsUser": 0}}, "/securityContext/runAsUser"),
        ({"replicaCount": 3}, "additional properties 'replicaCount'"),
        ({"postgresql": {"auth": {"password": "hunter2"}}}, "'password' not allowed"),
        ({"postgresql": {"enabled": False}}, "/externalDatabase/host"),
        ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
    ],
    ids=[
        "string-for-int",
        "negative-replicas",
        "root-uid",
        "unknown-top-level-key",
        "plaintext-password",
        "external-db-without-host",
        "bad-enum",
    ],
)
def test_values_schema_rejects_bad_values_through_helm(values: Obj, message: str) -> None:
    with pytest.raises(helm.HelmValuesError, match=re.escape(message)):
        render(values)


def test_values_schema_is_draft07_and_closed_at_top_level() -> None:
    with helm.Chart.load(CHART) as chart:
        schema = chart.schema
        defaults = chart.values
    assert schema is not None
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert schema["additionalProperties"] is False
    jsonschema.Draft7Validator.check_schema(schema)
    assert set(defaults) <= set(schema["properties"])
    jsonschema.Draft7Validator(schema).validate(defaults)
    jsonschema.Draft7Validator(schema).validate(_merge(defaults, _production_values()))


# --- Kubernetes and KubeRay schemas ------------------------------------------------------


def test_core_objects_pass_kubernetes_validate_strict(
    rendered: tuple[str, list[Obj], dict[str, str]],
) -> None:
    _, objs, _ = rendered
    core = [o for o in objs if not o["apiVersion"].startswith("ray.io/")]
    assert core
    for obj in core:
        try:
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = "/".join(str(p) for p in exc.path)
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {exc.message} at {path}")


@pytest.mark.parametrize(
    ("kind", "crd_file"),
    [("RayCluster", "ray.io_rayclusters.yaml"), ("RayJob", "ray.io_rayjobs.yaml")],
)
def test_ray_objects_match_kuberay_crd_schema(
    rendered: tuple[str, list[Obj], dict[str, str]],
    kind: str,
    crd_file: str,
    crd_validator: Callable[[str], jsonschema.Draft7Validator],
) -> None:
    name, objs, _ = rendered
    found = by_kind(objs, kind)
    if kind == "RayJob" and name != "all-optional":
        assert found == [], "rayJob is off by default"
        return
    assert len(found) == 1
    validator = crd_validator(crd_file)
    errors = sorted(validator.iter_errors(found[0]), key=lambda e: list(e.path))
    messages = ["/".join(str(p) for p in e.path) + ": " + e.message for e in errors]
    assert messages == []


def test_crd_check_catches_a_misspelt_field(
    crd_validator: Callable[[str], jsonschema.Draft7Validator],
) -> None:
    """The tightened CRD schema really rejects unknown fields (guards conftest's _strict)."""
    validator = crd_validator("ray.io_rayclusters.yaml")
    cluster = one(objects(render()), "RayCluster")
    cluster["spec"]["workerGroupSpecs"][0]["maxReplica"] = 3
    assert not validator.is_valid(cluster)


# --- Security ------------------------------------------------------------------------------


def test_every_container_has_resources_and_a_locked_down_security_context(
    rendered: tuple[str, list[Obj], dict[str, str]],
) -> None:
    _, objs, _ = rendered
    seen = 0
    for obj in objs:
        for spec, container in containers(obj):
            seen += 1
            where = f"{obj['kind']}/{obj['metadata']['name']}/{container['name']}"
            resources = container.get("resources", {})
            for part in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(part, {})), f"{where}: {part}"
            sc = container.get("securityContext", {})
            assert sc.get("runAsNonRoot") is True, where
            assert sc.get("runAsUser") == 1000, where
            assert sc.get("allowPrivilegeEscalation") is False, where
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], where
            assert spec["securityContext"]["runAsNonRoot"] is True, where
            if sc.get("readOnlyRootFilesystem"):
                mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
                volumes = {v["name"]: v for v in spec.get("volumes", [])}
                assert "/tmp" in mounts, f"{where}: read-only root needs a writable /tmp"
                assert "emptyDir" in volumes[mounts["/tmp"]], where
    assert seen >= 3


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_every_rendered_pod_passes_the_restricted_pod_security_standard(name: str) -> None:
    """Checked by hand-written rules (tests/deploy/pod_security.py): no API server with the
    PodSecurity admission controller runs here."""
    problems: list[str] = []
    checked = 0
    for obj in objects(render(VALUE_SETS[name])):
        for index, spec in enumerate(pod_specs(obj)):
            where = f"{obj['kind']}/{obj['metadata']['name']}#{index}"
            problems += restricted_violations(spec, where, read_only_root=False)
            checked += 1
    assert checked >= 2
    assert problems == []


def test_autoscaler_sidecar_is_locked_down_when_enabled() -> None:
    cluster = one(objects(render(VALUE_SETS["all-optional"])), "RayCluster")
    assert cluster["spec"]["enableInTreeAutoscaling"] is True
    options = cluster["spec"]["autoscalerOptions"]
    assert {"requests", "limits"} <= set(options["resources"])
    assert options["securityContext"]["runAsNonRoot"] is True
    assert options["securityContext"]["capabilities"]["drop"] == ["ALL"]
    # the autoscaler talks to the API server: the head keeps its token, workers do not
    head = cluster["spec"]["headGroupSpec"]["template"]["spec"]
    assert head.get("automountServiceAccountToken", True) is True
    for group in cluster["spec"]["workerGroupSpecs"]:
        assert group["template"]["spec"]["automountServiceAccountToken"] is False


SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|KEY", re.IGNORECASE)


def test_no_secret_values_in_rendered_output(
    rendered: tuple[str, list[Obj], dict[str, str]],
) -> None:
    _, objs, manifests = rendered
    assert by_kind(objs, "Secret") == [], "the chart must only reference existing Secrets"
    for obj in objs:
        for _, container in containers(obj):
            for env in container.get("env", []):
                if SECRET_NAME.search(env["name"]):
                    where = f"{obj['kind']}/{obj['metadata']['name']}/{env['name']}"
                    assert "value" not in env, f"{where} is a literal"
                    assert "secretKeyRef" in env["valueFrom"], where
    text = "\n".join(manifests.values())
    # database URIs name a user only: libpq reads the password from PGPASSWORD
    uris = re.findall(r"postgresql(?:\+psycopg2)?://[^\s\"]+", text)
    assert uris
    for uri in uris:
        assert re.fullmatch(r"postgresql\+psycopg2://[\w.-]+@[\w.-]+:\d+/\w+(\?sslmode=\w+)?", uri)


def test_secrets_cannot_be_passed_as_values() -> None:
    with helm.Chart.load(CHART) as chart:
        schema = chart.schema
    assert schema is not None
    flat = yaml.safe_dump(schema)
    assert not re.search(r"^\s*(password|secretAccessKey|accessKeyId|token):", flat, re.M)


# --- MLflow, Postgres --------------------------------------------------------------------


def test_mlflow_server_command_and_database_wiring() -> None:
    objs = objects(render())
    deploy = one(objs, "Deployment", f"{RELEASE}-mlflow")
    (container,) = deploy["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    assert args[0] == "server"
    # mlflow reads the store from MLFLOW_BACKEND_STORE_URI: no database address in the args
    assert "--backend-store-uri" not in args and not any("$(" in a for a in args)
    assert args[args.index("--artifacts-destination") + 1].startswith("s3://")
    assert "--serve-artifacts" in args
    assert args[args.index("--host") + 1] == "0.0.0.0"
    assert args[args.index("--port") + 1] == "5000"
    # MLflow 3 rejects unknown Host headers: the in-cluster service names must be allowed
    hosts = args[args.index("--allowed-hosts") + 1].split(",")
    assert f"{RELEASE}-mlflow.{NAMESPACE}.svc.cluster.local:5000" in hosts
    env = {e["name"]: e for e in container["env"]}
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "graft-postgres",
        "key": "password",
    }
    assert env["MLFLOW_BACKEND_STORE_URI"]["value"] == (
        f"postgresql+psycopg2://mlflow@{RELEASE}-postgresql:5432/mlflow"
    )
    one(objs, "StatefulSet", f"{RELEASE}-postgresql")
    svc = one(objs, "Service", f"{RELEASE}-mlflow")
    pod_labels = deploy["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    assert deploy["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_production_uses_external_database_and_no_postgres() -> None:
    objs = objects(render(_production_values()))
    assert by_kind(objs, "StatefulSet") == []
    deploy = one(objs, "Deployment", f"{RELEASE}-mlflow")
    assert deploy["spec"]["replicas"] == 2
    env = {e["name"]: e for e in deploy["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "graft-mlflow-db"
    assert env["MLFLOW_BACKEND_STORE_URI"]["value"] == (
        "postgresql+psycopg2://mlflow@mlflow-db.prod.internal:5432/mlflow?sslmode=require"
    )
    names = {p["metadata"]["name"] for p in by_kind(objs, "NetworkPolicy")}
    assert names == {f"{RELEASE}-mlflow", f"{RELEASE}-ray", f"{RELEASE}-ray-submitter"}


def test_network_policies_limit_mlflow_to_pipeline_pods_and_postgres_to_mlflow() -> None:
    objs = objects(render())
    mlflow = one(objs, "NetworkPolicy", f"{RELEASE}-mlflow")
    (rule,) = mlflow["spec"]["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 5000}]
    for peer in rule["from"]:
        assert peer["podSelector"]["matchLabels"] == {"graft.dev/pipeline": "true"}
    postgres = one(objs, "NetworkPolicy", f"{RELEASE}-postgresql")
    (rule,) = postgres["spec"]["ingress"]
    (peer,) = rule["from"]
    assert peer == {
        "podSelector": {
            "matchLabels": {
                "app.kubernetes.io/name": "graft",
                "app.kubernetes.io/instance": RELEASE,
                "app.kubernetes.io/component": "mlflow",
            }
        }
    }
    # Ray pods log to MLflow, so they carry the pipeline label
    cluster = one(objs, "RayCluster")
    groups = [cluster["spec"]["headGroupSpec"], *cluster["spec"]["workerGroupSpecs"]]
    for group in groups:
        assert group["template"]["metadata"]["labels"]["graft.dev/pipeline"] == "true"


# RBAC: tests/deploy/test_rbac.py. NetworkPolicies of the Ray pods: test_network_policy.py.


# --- Ray -----------------------------------------------------------------------------------


def test_raycluster_defaults_are_cpu_only() -> None:
    cluster = one(objects(render()), "RayCluster")
    spec = cluster["spec"]
    assert spec["rayVersion"] == "2.60.0"
    assert spec["enableInTreeAutoscaling"] is False
    assert [g["groupName"] for g in spec["workerGroupSpecs"]] == ["cpu"]
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["dashboard-host"] == "0.0.0.0"
    assert all(isinstance(v, str) for v in head["rayStartParams"].values())
    image = head["template"]["spec"]["containers"][0]["image"]
    assert image == "graft:0.1.0-cpu"
    assert "nvidia.com/gpu" not in yaml.safe_dump(cluster)


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_ray_pods_hold_the_s3_keys_from_the_secret(name: str) -> None:
    """Train and Tune pickle their S3 filesystem without keys (it would put them into
    tuner.pkl in the bucket): every Ray process reads the keys from its own environment."""
    keys = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    rendered = objects(render(VALUE_SETS[name]))
    ray_objects = [o for o in rendered if o["kind"] in ("RayCluster", "RayJob")]
    assert ray_objects
    for ray_object in ray_objects:
        spec = ray_object["spec"].get("rayClusterSpec", ray_object["spec"])
        groups = [spec["headGroupSpec"], *spec.get("workerGroupSpecs", [])]
        for group in groups:
            container = group["template"]["spec"]["containers"][0]
            env = {e["name"]: e for e in container["env"]}
            assert keys <= set(env), (ray_object["kind"], container["name"])
            for key in keys:
                reference = env[key]["valueFrom"]["secretKeyRef"]
                assert reference["name"] == "graft-s3" and "value" not in env[key]


def test_production_raycluster_has_gpu_workers_and_autoscaling() -> None:
    cluster = one(objects(render(_production_values())), "RayCluster")
    spec = cluster["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    gpu = groups["gpu"]
    assert gpu["rayStartParams"]["num-gpus"] == "1"
    assert gpu["minReplicas"] <= gpu["replicas"] <= gpu["maxReplicas"]
    pod = gpu["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"].endswith(":0.1.0-cuda")
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    cpu = groups["cpu"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in cpu["resources"]["limits"]


def test_rayjob_example() -> None:
    objs = objects(render({"rayJob": {"enabled": True}}))
    job = one(objs, "RayJob")
    spec = job["spec"]
    assert spec["entrypoint"].startswith("graft ")
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["ttlSecondsAfterFinished"] == 600
    submitter = spec["submitterPodTemplate"]["spec"]
    assert submitter["restartPolicy"] == "Never"
    assert submitter["automountServiceAccountToken"] is False


def test_disabling_components_removes_their_objects() -> None:
    objs = objects(
        render(
            {
                "mlflow": {"enabled": False},
                "rayCluster": {"enabled": False},
                "networkPolicy": {"enabled": False},
            }
        )
    )
    assert {o["kind"] for o in objs} == {"ServiceAccount", "Role", "RoleBinding"}


def test_notes_render_connection_details() -> None:
    notes = render()[f"{CHART.name}/templates/NOTES.txt"]
    assert f"http://{RELEASE}-mlflow.{NAMESPACE}.svc:5000" in notes
    assert f"ray://{RELEASE}-ray-head-svc.{NAMESPACE}.svc:10001" in notes
