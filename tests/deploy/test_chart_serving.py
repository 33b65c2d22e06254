"""The chart's optional model server (serving.enabled): `graft serve` in a Deployment behind a
Service, with MLflow's user from the Secret the other pods use, probes on the server's health
paths, and a NetworkPolicy that admits its clients and lets it reach MLflow.

The schema validation, the restricted Pod Security Standard and "every pod is selected by a
NetworkPolicy" cover it through test_chart.py's "all-optional" value set."""

from __future__ import annotations

from typing import Any

import pytest
from network_policy import Pod, admits
from test_chart import NAMESPACE, RELEASE, VALUE_SETS, by_kind, helm, objects, one, render

from graft.cli.serve import CHAMPION_URI
from graft.config import PIPELINE_POD_LABEL, RAY_NODE_LABEL
from graft.config.export import ExportConfig
from graft.export.scoring_server import HEALTH_PATHS

Obj = dict[str, Any]
SERVING = f"{RELEASE}-serving"
ON: Obj = {"serving": {"enabled": True}}
CLIENT = Pod({"graft.dev/model-client": "true"}, NAMESPACE)


def _deployment(values: Obj) -> tuple[Obj, Obj]:
    deploy = one(objects(render(values)), "Deployment", SERVING)
    (container,) = deploy["spec"]["template"]["spec"]["containers"]
    return deploy, container


def _serving_pod(values: Obj) -> Pod:
    deploy, _ = _deployment(values)
    return Pod(deploy["spec"]["template"]["metadata"]["labels"], NAMESPACE)


def test_serving_is_off_by_default_and_in_the_all_optional_checks() -> None:
    names = {o["metadata"]["name"] for o in objects(render())}
    assert SERVING not in names
    assert VALUE_SETS["all-optional"]["serving"] == {"enabled": True}


def test_the_deployment_runs_graft_serve_on_the_champion() -> None:
    deploy, container = _deployment(ON)
    assert container["command"] == ["graft"]
    args = container["args"]
    assert args[0] == "serve"
    assert args[args.index("--host") + 1] == "0.0.0.0"
    # the chart's default is graft serve's own: the champion of Graft's default model name
    default_model = CHAMPION_URI.format(name=ExportConfig().model_name)
    assert args[args.index("--model") + 1] == default_model == "models:/graft-classifier@champion"
    port = int(args[args.index("--port") + 1])
    assert container["ports"] == [{"name": "http", "containerPort": port, "protocol": "TCP"}]
    svc = one(objects(render(ON)), "Service", SERVING)
    assert svc["spec"]["ports"][0]["targetPort"] == "http"
    pod_labels = deploy["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    assert deploy["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    # no Kubernetes API access, no pipeline label (which would open MLflow's and Ray's ports)
    assert deploy["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    assert PIPELINE_POD_LABEL[0] not in pod_labels


def test_mlflow_credentials_come_from_the_secret_the_other_pods_use() -> None:
    objs = objects(render(ON))
    _, container = _deployment(ON)
    env = {e["name"]: e for e in container["env"]}
    assert env["MLFLOW_TRACKING_URI"]["value"] == f"http://{RELEASE}-mlflow.{NAMESPACE}.svc:5000"
    head = one(objs, "RayCluster")["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    ray_env = {e["name"]: e for e in head["env"]}
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        assert "value" not in env[name]
        assert env[name]["valueFrom"] == ray_env[name]["valueFrom"]
        assert env[name]["valueFrom"]["secretKeyRef"]["name"] == "graft-mlflow-auth"


def test_probes_use_the_servers_health_paths_and_the_root_is_read_only() -> None:
    deploy, container = _deployment(ON)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] in HEALTH_PATHS, probe
        assert container[probe]["httpGet"]["port"] == "http", probe
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    volumes = {v["name"]: v for v in deploy["spec"]["template"]["spec"]["volumes"]}
    (tmp,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert "emptyDir" in volumes[tmp["name"]]
    assert {"name": "HOME", "value": "/tmp"} in container["env"]


def test_image_and_tracking_server_are_values() -> None:
    values = {
        "mlflow": {"enabled": False},
        "serving": {
            "enabled": True,
            "image": {"tag": "0.2.0-cpu"},
            "trackingUri": "https://mlflow.example.com",
            "modelUri": "models:/fraud/7",
        },
    }
    _, container = _deployment(values)
    assert container["image"] == "graft:0.2.0-cpu"
    assert container["imagePullPolicy"] == "IfNotPresent"
    env = {e["name"]: e for e in container["env"]}
    assert env["MLFLOW_TRACKING_URI"]["value"] == "https://mlflow.example.com"
    assert container["args"][container["args"].index("--model") + 1] == "models:/fraud/7"
    _, default = _deployment(ON)
    assert default["image"] == "graft:0.1.0-cpu"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"trackingUri": "http://admin:hunter2@mlflow:5000"}, "/serving/trackingUri"),
        ({"modelUri": "graft-classifier"}, "/serving/modelUri"),
        ({"threads": 0}, "/serving/threads"),
    ],
    ids=["credentials-in-the-uri", "not-a-model-uri", "no-threads"],
)
def test_the_schema_refuses_bad_serving_values(values: Obj, message: str) -> None:
    with pytest.raises(helm.HelmValuesError, match=message):
        render({"serving": {"enabled": True, **values}})


def test_without_the_charts_mlflow_a_tracking_uri_is_required() -> None:
    with pytest.raises(helm.HelmRenderError, match=r"serving\.trackingUri is required"):
        render({"mlflow": {"enabled": False}, "serving": {"enabled": True}})


def test_the_network_policy_admits_clients_on_the_port_and_the_server_reaches_mlflow() -> None:
    objs = objects(render(ON))
    policies = by_kind(objs, "NetworkPolicy")
    server = _serving_pod(ON)
    for client, expected in [
        (CLIENT, True),
        (Pod({"app": "notebook"}, NAMESPACE), False),
        (Pod(dict([PIPELINE_POD_LABEL]), NAMESPACE), False),
        (Pod(CLIENT.labels, "other-team"), False),
    ]:
        assert admits(policies, server, client, 8080) is expected, client
    assert not admits(policies, server, CLIENT, 8081)
    mlflow = one(objs, "Deployment", f"{RELEASE}-mlflow")
    mlflow_pod = Pod(mlflow["spec"]["template"]["metadata"]["labels"], NAMESPACE)
    assert admits(policies, mlflow_pod, server, 5000)
    # nothing more: not Ray's ports, and MLflow stays closed to other pods
    assert not admits(policies, Pod(dict([RAY_NODE_LABEL]), NAMESPACE), server, 8265)
    assert not admits(policies, mlflow_pod, CLIENT, 5000)


def test_client_namespaces_reach_the_server() -> None:
    values = {"serving": {"enabled": True, "clientNamespaces": ["apps"]}}
    policies = by_kind(objects(render(values)), "NetworkPolicy")
    server = _serving_pod(values)
    assert admits(policies, server, Pod(CLIENT.labels, "apps"), 8080)
    assert not admits(policies, server, Pod(CLIENT.labels, "other-team"), 8080)
