"""The chart's RBAC: the pipeline's Role grants exactly the Kubernetes calls Graft's code makes,
and is bound to Graft's own ServiceAccount, never to an account other workloads share.

The calls are read from the source (every ``kubernetes`` client method Graft calls), so a new
call without a grant, or a grant no call uses, fails here.
"""

from __future__ import annotations

import ast
import re

import pytest
from test_chart import NAMESPACE, REPO, by_kind, helm, objects, one, render

from graft.config import GraftConfig
from graft.remote import kuberay

SOURCE = REPO / "src" / "graft"
# kubernetes-client method names: <verb>_namespaced_<resource>, <verb>_cluster_<resource>,
# <verb>_<resource>_for_all_namespaces
_CLIENT_METHOD = re.compile(
    r"^(?P<verb>create|read|get|list|delete_collection|delete|patch|replace|watch)_"
    r"(?:(?:namespaced|cluster)_(?P<resource>\w+)|(?P<all>\w+)_for_all_namespaces)$"
)
_VERBS = {"read": "get", "replace": "update", "delete_collection": "deletecollection"}
# the client's resource names -> (API group, resource as RBAC names it); one not listed here
# fails the test until it is added (and granted)
_RESOURCES = {
    "pod": ("", "pods"),
    "pod_log": ("", "pods/log"),
    "custom_object": (kuberay.GROUP, kuberay.PLURAL),
}

Grant = tuple[str, str, str]  # API group, resource, verb


def kubernetes_calls() -> dict[Grant, list[str]]:
    """Every Kubernetes API call in Graft's source, as the grant it needs -> where."""
    calls: dict[Grant, list[str]] = {}
    for path in sorted(SOURCE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute) and node.attr == "Watch":
                pytest.fail(f"{path}:{node.lineno}: a watch needs the watch verb granted")
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            match = _CLIENT_METHOD.match(node.func.attr)
            if match is None:
                continue
            resource = match["resource"] or match["all"]
            assert resource in _RESOURCES, (
                f"{path}:{node.lineno}: {node.func.attr}: add its resource to _RESOURCES "
                "and grant it in charts/graft/templates/rbac.yaml"
            )
            if resource == "custom_object":
                # GROUP and PLURAL are kuberay's: a custom object call elsewhere may differ
                assert path.name == "kuberay.py", f"{path}:{node.lineno}: {node.func.attr}"
            verb = _VERBS.get(match["verb"], match["verb"])
            where = f"{path.relative_to(REPO)}:{node.lineno}"
            calls.setdefault((*_RESOURCES[resource], verb), []).append(where)
    return calls


def _granted(role: dict) -> set[Grant]:
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_the_role_grants_exactly_the_calls_graft_makes() -> None:
    calls = kubernetes_calls()
    # what graft.remote.kuberay does today; the scan found every one
    assert set(calls) == {
        ("ray.io", "rayjobs", "create"),
        ("ray.io", "rayjobs", "get"),
        ("ray.io", "rayjobs", "delete"),
        ("", "pods", "list"),
        ("", "pods/log", "get"),
    }
    objs = objects(render())
    assert by_kind(objs, "ClusterRole") == [] and by_kind(objs, "ClusterRoleBinding") == []
    role = one(objs, "Role")
    assert _granted(role) == set(calls)
    assert not any("*" in str(rule) for rule in role["rules"])


def test_the_role_is_bound_to_graft_s_own_service_account_only() -> None:
    objs = objects(render())
    role = one(objs, "Role")["metadata"]["name"]
    bindings = {b["roleRef"]["name"]: b for b in by_kind(objs, "RoleBinding")}
    # Graft's Role, and KFP's runner role that any pipeline pod needs (Argo's executor, KFP's
    # launcher): both for Graft's account alone
    assert set(bindings) == {role, "pipeline-runner"}
    assert bindings["pipeline-runner"]["roleRef"]["kind"] == "Role"
    sa = one(objs, "ServiceAccount")
    for binding in bindings.values():
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": NAMESPACE}
        ]
    # the runs `graft submit` and `graft schedule` create use it by default
    assert GraftConfig().cluster.service_account == sa["metadata"]["name"]
    unbound = objects(render({"rbac": {"kfpRunnerRole": {"kind": "Role", "name": ""}}}))
    assert [b["roleRef"]["name"] for b in by_kind(unbound, "RoleBinding")] == [role]


@pytest.mark.parametrize("account", ["pipeline-runner", "default-editor", "default"])
def test_binding_a_shared_service_account_fails_to_render(account: str) -> None:
    subject = {"kind": "ServiceAccount", "name": account, "namespace": "kubeflow"}
    with pytest.raises(helm.HelmError, match=f'ServiceAccount "{account}" is shared'):
        render({"rbac": {"extraSubjects": [subject]}})


def test_running_as_the_namespace_default_account_fails_to_render() -> None:
    with pytest.raises(helm.HelmError, match='serviceAccount: "default" is shared'):
        render({"serviceAccount": {"create": False}})


def test_a_dedicated_extra_subject_is_still_allowed() -> None:
    objs = objects(
        render({"rbac": {"extraSubjects": [{"kind": "ServiceAccount", "name": "graft-ci"}]}})
    )
    (binding,) = [
        b
        for b in by_kind(objs, "RoleBinding")
        if b["roleRef"]["kind"] == "Role"
        and b["roleRef"]["name"] == one(objs, "Role")["metadata"]["name"]
    ]
    subjects = {(s["name"], s.get("namespace")) for s in binding["subjects"]}
    assert ("graft-ci", NAMESPACE) in subjects


def test_ray_pods_get_no_api_token_but_the_autoscaling_head() -> None:
    """Ray pods never call the Kubernetes API; only the head whose autoscaler sidecar scales
    the RayCluster keeps a token."""
    for values in ({}, {"rayJob": {"enabled": True}}):
        for obj in objects(render(values)):
            if obj["kind"] in ("RayCluster", "RayJob"):
                for spec in _pod_specs(obj):
                    assert spec["automountServiceAccountToken"] is False, obj["kind"]


def _pod_specs(node: object) -> list[dict]:
    if isinstance(node, dict):
        found = [node] if isinstance(node.get("containers"), list) else []
        return found + [s for v in node.values() for s in _pod_specs(v)]
    if isinstance(node, list):
        return [s for item in node for s in _pod_specs(item)]
    return []


def test_the_scan_reads_kubernetes_client_calls() -> None:
    """Guards the scan itself: the method names it maps are the client's."""
    client = pytest.importorskip("kubernetes.client")
    for name in (
        "create_namespaced_custom_object",
        "get_namespaced_custom_object",
        "delete_namespaced_custom_object",
    ):
        assert hasattr(client.CustomObjectsApi, name) and _CLIENT_METHOD.match(name)
    for name in ("list_namespaced_pod", "read_namespaced_pod_log", "list_pod_for_all_namespaces"):
        assert hasattr(client.CoreV1Api, name) and _CLIENT_METHOD.match(name)
    assert _CLIENT_METHOD.match("read_text") is None
