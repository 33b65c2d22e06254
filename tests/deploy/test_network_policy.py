"""The chart's NetworkPolicies: every pod is selected by one, and the Ray ports admit only the
pipeline's pods, Ray's own pods and the KubeRay operator.

Evaluated by hand (tests/deploy/network_policy.py): no API server or CNI runs here. The pods
are those the chart renders (every value set) and those of the RayJobs that Graft's pipeline
creates (``graft.remote.kuberay_manifest``), which run in the chart's namespace.
"""

from __future__ import annotations

from typing import Any

import pytest
from network_policy import Pod, admits, pod_templates, policies_selecting, selects
from test_chart import NAMESPACE, RELEASE, VALUE_SETS, by_kind, objects, render

from graft.config import PIPELINE_POD_LABEL, RAY_NODE_LABEL, RAY_SUBMITTER_LABEL, load_config
from graft.remote.command import RAY_STAGES, StageInputs
from graft.remote.kuberay_manifest import build_rayjob

Obj = dict[str, Any]
RAY_PORTS = (6379, 8265, 10001, 52365, 10002, 19999, 43117)  # GCS ... a random node port
PIPELINE = Pod(dict([PIPELINE_POD_LABEL]), NAMESPACE)
RAY_NODE = Pod(dict([RAY_NODE_LABEL]), NAMESPACE)
SUBMITTER = Pod(dict([RAY_SUBMITTER_LABEL]), NAMESPACE)
OPERATOR = Pod({"app.kubernetes.io/name": "kuberay-operator"}, "kuberay-system")


def _rayjob_manifests() -> list[Obj]:
    config = load_config(preset="tiny", overrides=["ray.mode=rayjob", "ray.staging_uri=s3://b/p"])
    inputs = StageInputs("s3://b/dataset", "s3://b/out", "run1", "s3://b/pre", "s3://b/fine")
    return [build_rayjob(config, stage, inputs, "graft:test") for stage in RAY_STAGES]  # type: ignore[arg-type]


def _policies(values: Obj | None = None) -> list[Obj]:
    return by_kind(objects(render(values)), "NetworkPolicy")


def _pods(objs: list[Obj]) -> list[tuple[str, Pod]]:
    return [
        (f"{obj['kind']}/{obj['metadata']['name']}{where}", Pod(labels, NAMESPACE))
        for obj in objs
        for where, labels in pod_templates(obj)
    ]


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_every_pod_of_the_chart_and_of_graft_rayjobs_is_selected_by_a_network_policy(
    name: str,
) -> None:
    objs = objects(render(VALUE_SETS[name]))
    policies = by_kind(objs, "NetworkPolicy")
    pods = _pods(objs) + _pods(_rayjob_manifests())
    assert len(pods) >= 9  # MLflow, Ray head and workers, three RayJobs' three pods each
    unselected = [where for where, pod in pods if not policies_selecting(policies, pod)]
    assert unselected == []


def _ray_pods(objs: list[Obj]) -> list[tuple[str, Pod]]:
    """Heads and workers (not submitters) of every Ray cluster: the RayCluster, the chart's
    RayJob and Graft's RayJobs."""
    return [
        (where, pod)
        for where, pod in _pods(objs)
        if _is_ray_object(where) and "submitterPodTemplate" not in where
    ]


def _is_ray_object(where: str) -> bool:
    return where.startswith(("RayCluster/", "RayJob/"))


def test_ray_ports_admit_the_pipeline_ray_nodes_and_the_operator_only() -> None:
    objs = objects(render(VALUE_SETS["all-optional"]))
    policies = by_kind(objs, "NetworkPolicy")
    ray_pods = _ray_pods(objs + _rayjob_manifests())
    assert len(ray_pods) == 3 + 2 + 2 * len(RAY_STAGES)  # RayCluster: head, cpu, gpu
    stranger = Pod({"app": "notebook"}, NAMESPACE)
    elsewhere = Pod(dict([PIPELINE_POD_LABEL]), "other-team")
    for where, target in ray_pods:
        for port in RAY_PORTS:
            assert admits(policies, target, RAY_NODE, port), f"{where}:{port} from a Ray node"
            assert not admits(policies, target, stranger, port), f"{where}:{port} from anyone"
            assert not admits(policies, target, elsewhere, port), f"{where}:{port} other ns"
            # the Jobs API and the Ray Client, nothing else, for the pipeline and submitters
            for client in (PIPELINE, SUBMITTER):
                assert admits(policies, target, client, port) == (port in (8265, 10001)), (
                    f"{where}:{port} from {client.labels}"
                )
            # KubeRay's operator polls a RayJob's status from the Jobs API
            assert admits(policies, target, OPERATOR, port) == (port == 8265), where
    # pods can forge labels only where they may create pods: the operator's label from
    # another namespace does not open the Jobs API
    fake_operator = Pod(OPERATOR.labels, NAMESPACE)
    assert not admits(policies, ray_pods[0][1], fake_operator, 8265)


def test_submitter_pods_admit_nothing() -> None:
    policies = _policies(VALUE_SETS["all-optional"])
    for where, pod in _pods(_rayjob_manifests()) + _pods(
        objects(render(VALUE_SETS["all-optional"]))
    ):
        if "submitterPodTemplate" not in where:
            continue
        for source in (PIPELINE, RAY_NODE, SUBMITTER, OPERATOR):
            assert not admits(policies, pod, source, 8265), where


def test_pipeline_namespaces_reach_the_ray_client_and_jobs_api() -> None:
    policies = _policies({"networkPolicy": {"pipelineNamespaces": ["team-a"]}})
    from_team = Pod(PIPELINE.labels, "team-a")
    assert admits(policies, RAY_NODE, from_team, 10001)
    assert not admits(policies, RAY_NODE, from_team, 6379)
    assert not admits(policies, RAY_NODE, Pod(PIPELINE.labels, "team-b"), 10001)


def test_the_operator_namespace_is_a_value() -> None:
    policies = _policies({"networkPolicy": {"kuberayOperator": {"namespace": "ray-system"}}})
    assert admits(policies, RAY_NODE, Pod(OPERATOR.labels, "ray-system"), 8265)
    assert not admits(policies, RAY_NODE, OPERATOR, 8265)


def test_chart_and_rayjob_manifests_label_ray_pods_alike() -> None:
    """The chart's policy selects Graft's RayJob pods by the labels graft.config defines."""
    (ray_policy,) = [p for p in _policies() if p["metadata"]["name"] == f"{RELEASE}-ray"]
    assert ray_policy["spec"]["podSelector"] == {"matchLabels": dict([RAY_NODE_LABEL])}
    (submitter_policy,) = [
        p for p in _policies() if p["metadata"]["name"] == f"{RELEASE}-ray-submitter"
    ]
    assert submitter_policy["spec"]["podSelector"] == {"matchLabels": dict([RAY_SUBMITTER_LABEL])}
    assert "ingress" not in submitter_policy["spec"]


def _expression(operator: str, *values: str) -> Obj:
    expression: Obj = {"key": "a", "operator": operator}
    return {"matchExpressions": [expression | ({"values": list(values)} if values else {})]}


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ({}, {"a": "1"}, True),
        ({"matchLabels": {"a": "1"}}, {"a": "1", "b": "2"}, True),
        ({"matchLabels": {"a": "1"}}, {"a": "2"}, False),
        (_expression("In", "1", "2"), {"a": "2"}, True),
        (_expression("In", "1"), {}, False),
        (_expression("NotIn", "1"), {}, True),
        (_expression("NotIn", "1"), {"a": "1"}, False),
        (_expression("Exists"), {"a": ""}, True),
        (_expression("DoesNotExist"), {"a": ""}, False),
        ({"matchLabels": {"a": "1"}, **_expression("Exists")}, {"b": "1"}, False),
    ],
)
def test_the_selector_matcher(selector: Obj, labels: dict[str, str], expected: bool) -> None:
    assert selects(selector, labels) is expected


def test_the_evaluator_isolates_only_selected_pods_and_reads_peers_and_ports() -> None:
    policy = {
        "metadata": {"namespace": "ns"},
        "spec": {
            "podSelector": {"matchLabels": {"role": "db"}},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [{"podSelector": {"matchLabels": {"role": "api"}}}],
                    "ports": [{"protocol": "TCP", "port": 5000, "endPort": 5010}],
                }
            ],
        },
    }
    db, api, other = Pod({"role": "db"}, "ns"), Pod({"role": "api"}, "ns"), Pod({}, "ns")
    assert admits([policy], db, api, 5005) and not admits([policy], db, api, 5011)
    assert not admits([policy], db, api, 5005, "UDP")
    assert not admits([policy], db, other, 5005)
    assert not admits([policy], db, Pod({"role": "api"}, "ns2"), 5005)
    assert admits([policy], other, Pod({}, "ns2"), 1)  # not selected: not isolated
