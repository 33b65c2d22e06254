"""The Kubernetes "restricted" Pod Security Standard, checked on a pod spec.

The rules of https://kubernetes.io/docs/concepts/security/pod-security-standards/ (baseline
and restricted, v1.30) that a pod spec can break, written out, since no API server with the
PodSecurity admission controller runs here. Plus Graft's own rule: a read-only root
filesystem, with /tmp writable from an emptyDir.
"""

from __future__ import annotations

from typing import Any

Obj = dict[str, Any]

RESTRICTED_VOLUME_TYPES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
    "projected", "secret",
}  # fmt: skip
SECCOMP_TYPES = {"RuntimeDefault", "Localhost"}


def pod_specs(node: Any) -> list[Obj]:
    """Every pod spec (a dict holding `containers`) anywhere inside a manifest."""
    found: list[Obj] = []
    if isinstance(node, dict):
        if isinstance(node.get("containers"), list):
            found.append(node)
        for value in node.values():
            found += pod_specs(value)
    elif isinstance(node, list):
        for item in node:
            found += pod_specs(item)
    return found


def restricted_violations(pod: Obj, where: str, read_only_root: bool = True) -> list[str]:
    """What in ``pod`` the restricted profile refuses, and with ``read_only_root`` a writable
    root filesystem too; [] when none."""
    problems: list[str] = []
    pod_sc = pod.get("securityContext", {})
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(field):
            problems.append(f"{where}: {field}")
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUME_TYPES:
            problems.append(f"{where}: volume {volume['name']} of type {sorted(kinds)}")
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for container in pod["containers"] + pod.get("initContainers", []):
        at = f"{where}/{container['name']}"
        sc = container.get("securityContext", {})

        def setting(key: str, sc: Obj = sc) -> Any:
            return sc.get(key, pod_sc.get(key))

        if setting("runAsNonRoot") is not True:
            problems.append(f"{at}: runAsNonRoot is not true")
        if setting("runAsUser") == 0:
            problems.append(f"{at}: runAsUser 0")
        if sc.get("privileged"):
            problems.append(f"{at}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{at}: allowPrivilegeEscalation is not false")
        capabilities = sc.get("capabilities", {})
        if "ALL" not in capabilities.get("drop", []):
            problems.append(f"{at}: capabilities do not drop ALL")
        if set(capabilities.get("add", [])) - {"NET_BIND_SERVICE"}:
            problems.append(f"{at}: adds capabilities {capabilities['add']}")
        if (setting("seccompProfile") or {}).get("type") not in SECCOMP_TYPES:
            problems.append(f"{at}: no RuntimeDefault or Localhost seccompProfile")
        if any(port.get("hostPort") for port in container.get("ports", [])):
            problems.append(f"{at}: hostPort")
        if not read_only_root:
            continue
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{at}: the root filesystem is writable")
        mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
        if "emptyDir" not in volumes.get(mounts.get("/tmp", ""), {}):
            problems.append(f"{at}: no writable /tmp (an emptyDir) under a read-only root")
    return problems
