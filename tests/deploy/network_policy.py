"""Kubernetes NetworkPolicy semantics for ingress, evaluated on rendered manifests.

No API server or CNI runs here, so what a policy admits is worked out by hand, following
https://kubernetes.io/docs/concepts/services-networking/network-policies/: a pod is isolated
for ingress once any policy of its namespace selects it with ``Ingress`` among its policy
types; traffic is then admitted when some ingress rule of some policy selecting it admits the
source pod on that port. A peer with only ``podSelector`` means pods of the policy's own
namespace; with ``namespaceSelector`` it means pods (all, or those matching ``podSelector``) in
matching namespaces. Named ports and ``ipBlock`` are not evaluated: a policy using them fails
the check instead of being misread.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

Obj = dict[str, Any]
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


def selects(selector: Obj, labels: dict[str, str]) -> bool:
    """Whether a LabelSelector (matchLabels and matchExpressions) matches ``labels``; an
    empty selector matches every pod."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values") or []
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and key in labels and labels[key] in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
        if operator not in ("In", "NotIn", "Exists", "DoesNotExist"):
            raise ValueError(f"unknown selector operator {operator!r}")
    return True


@dataclass(frozen=True)
class Pod:
    """A pod as a policy sees it: its labels and its namespace."""

    labels: dict[str, str]
    namespace: str

    def namespace_labels(self) -> dict[str, str]:
        # every namespace carries its own name as a label (Kubernetes >= 1.22)
        return {NAMESPACE_NAME_LABEL: self.namespace}


def policies_selecting(policies: list[Obj], pod: Pod) -> list[Obj]:
    """The ingress policies of the pod's namespace whose podSelector selects it."""
    return [
        policy
        for policy in policies
        if policy["metadata"].get("namespace") == pod.namespace
        and "Ingress" in policy["spec"].get("policyTypes", ["Ingress"])
        and selects(policy["spec"]["podSelector"], pod.labels)
    ]


def _peer_admits(peer: Obj, policy_namespace: str, source: Pod) -> bool:
    if "ipBlock" in peer:
        raise ValueError("ipBlock peers are not evaluated here")
    if "namespaceSelector" in peer:
        if not selects(peer["namespaceSelector"], source.namespace_labels()):
            return False
    elif source.namespace != policy_namespace:
        return False
    return selects(peer.get("podSelector") or {}, source.labels)


def _port_admits(rule_port: Obj, port: int, protocol: str) -> bool:
    if rule_port.get("protocol", "TCP") != protocol:
        return False
    if "port" not in rule_port:
        return True
    if not isinstance(rule_port["port"], int):
        raise ValueError(f"named port {rule_port['port']!r} is not evaluated here")
    return rule_port["port"] <= port <= rule_port.get("endPort", rule_port["port"])


def admits(policies: list[Obj], target: Pod, source: Pod, port: int, protocol: str = "TCP") -> bool:
    """Whether traffic from ``source`` to ``target``'s ``port`` is admitted."""
    selecting = policies_selecting(policies, target)
    if not selecting:
        return True  # not isolated: everything may come in
    for policy in selecting:
        for rule in policy["spec"].get("ingress") or []:
            peers = rule.get("from")
            ports = rule.get("ports")
            from_ok = not peers or any(
                _peer_admits(p, policy["metadata"]["namespace"], source) for p in peers
            )
            port_ok = not ports or any(_port_admits(p, port, protocol) for p in ports)
            if from_ok and port_ok:
                return True
    return False


def pod_templates(node: Any, where: str = "") -> Iterator[tuple[str, dict[str, str]]]:
    """(where, labels) of every pod template inside a manifest: a dict whose ``spec`` holds
    ``containers`` (Deployment, StatefulSet, Job templates; RayCluster groups, a RayJob's
    submitter)."""
    if isinstance(node, dict):
        spec = node.get("spec")
        if isinstance(spec, dict) and isinstance(spec.get("containers"), list):
            yield where, dict((node.get("metadata") or {}).get("labels") or {})
        for key, value in node.items():
            yield from pod_templates(value, f"{where}/{key}")
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from pod_templates(item, f"{where}/{index}")
