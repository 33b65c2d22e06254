"""A KubeRay RayJob (``ray.io/v1``) that runs one training stage on a Ray cluster of its own.

Built from the config alone: the stage's command (:mod:`graft.remote.command`) is the
entrypoint, Ray Train's settings are its runtime environment, the head runs the stage's driver,
and each Ray Train worker gets a worker pod sized by the stage's ``cluster.stages`` block.
KubeRay's submitter Job (``K8sJobMode``) runs ``ray job submit`` once the cluster is up; the
cluster is deleted ``ray.rayjob.ttl_seconds_after_finished`` after the job ends.
``graft rayjob`` prints it for ``kubectl apply -f -``.

Nothing here talks to a Kubernetes API server, and none can run where Graft is developed: the
manifest is validated against the KubeRay CRD's OpenAPI schema in tests
(``tests/deploy/test_rayjob_manifest.py``), never applied there.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from graft.config import (
    PIPELINE_POD_LABEL,
    RAY_NODE_LABEL,
    RAY_SUBMITTER_LABEL,
    SHM_VOLUME,
    ClusterConfig,
    GraftConfig,
    StageResources,
)
from graft.io.ray_runtime import train_env_defaults
from graft.remote.command import RayStage, StageInputs, stage_command

# KubeRay's MaxRayJobNameLength: the RayCluster and Service names it derives must stay
# valid DNS labels.
MAX_RAYJOB_NAME = 47
# The chart's images create user graft with this uid (charts/graft/values.yaml).
GRAFT_UID = 1000
GRAFT_HOME = "/home/graft"  # the image's home and working directory
# the "restricted" Pod Security Standard, and a read-only root as the chart's pods have:
# what Ray, torch and MLflow write goes to the emptyDirs of SCRATCH_VOLUMES
RAY_CONTAINER_SECURITY = {
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "privileged": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
SCRATCH_VOLUMES = (("tmp", "/tmp"), ("home", GRAFT_HOME))
EmptyDir = tuple[str, str, dict[str, Any]]  # volume name, mount path, emptyDir source


def rayjob_name(stage: str, parent_run_id: str) -> str:
    """``graft-<stage>-<run key>``: a DNS-1035 label of at most 47 characters."""
    key = re.sub(r"[^a-z0-9]", "", parent_run_id.lower())[:12]
    return f"graft-{stage}-{key}"[:MAX_RAYJOB_NAME].rstrip("-")


def worker_replicas(config: GraftConfig, stage: RayStage) -> int:
    """One worker pod per Ray Train worker the stage runs at once."""
    if stage == "pretrain":
        return config.pretrain.num_workers
    if stage == "transfer-finetune":
        return config.finetune.num_workers
    return config.tune.max_concurrent * config.tune.workers_per_trial


def build_rayjob(
    config: GraftConfig, stage: RayStage, inputs: StageInputs, image: str
) -> dict[str, Any]:
    """The RayJob object for ``stage`` (a dict ready for ``yaml.safe_dump``)."""

    entrypoint = stage_command(config, stage, inputs)
    settings = config.ray.rayjob
    name = rayjob_name(stage, inputs.parent_run_id)
    labels = {
        "app.kubernetes.io/name": "graft",
        "app.kubernetes.io/component": "ray-job",
        "graft.dev/stage": stage,
    }
    spec: dict[str, Any] = {
        "entrypoint": entrypoint,
        "runtimeEnvYAML": yaml.safe_dump({"env_vars": train_env_defaults()}, sort_keys=True),
        "metadata": {"graft.stage": stage, "graft.parent_run_id": inputs.parent_run_id},
        "submissionMode": "K8sJobMode",
        "shutdownAfterJobFinishes": settings.shutdown_after_job_finishes,
        "ttlSecondsAfterFinished": settings.ttl_seconds_after_finished,
        "backoffLimit": settings.backoff_limit,
        "submitterPodTemplate": _submitter_template(config, image, labels),
        "rayClusterSpec": _ray_cluster_spec(config, stage, image, labels),
    }
    if settings.active_deadline_seconds is not None:
        spec["activeDeadlineSeconds"] = settings.active_deadline_seconds
    metadata: dict[str, Any] = {"name": name, "labels": labels}
    if settings.namespace:
        metadata["namespace"] = settings.namespace
    return {"apiVersion": "ray.io/v1", "kind": "RayJob", "metadata": metadata, "spec": spec}


def _submitter_template(config: GraftConfig, image: str, labels: dict[str, str]) -> dict[str, Any]:
    """The pod of KubeRay's submitter Job, which runs ``ray job submit`` (KubeRay gives it the
    token: RAY_AUTH_MODE and RAY_AUTH_TOKEN)."""
    settings = config.ray.rayjob
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        # it talks to the Ray head only, never to the Kubernetes API
        "automountServiceAccountToken": False,
        "securityContext": _pod_security(),
        "containers": [
            {
                "name": "ray-job-submitter",
                "image": image,
                "resources": _same_request_and_limit(
                    settings.submitter_cpu, settings.submitter_memory
                ),
                "securityContext": RAY_CONTAINER_SECURITY,
            }
        ],
        **_pull_secrets(config.cluster),
    }
    _with_scratch(pod)
    # the chart's NetworkPolicy lets submitter pods reach the head's Jobs API, and nothing
    # reach them
    return {"metadata": {"labels": labels | dict([RAY_SUBMITTER_LABEL])}, "spec": pod}


def _ray_cluster_spec(
    config: GraftConfig, stage: RayStage, image: str, labels: dict[str, str]
) -> dict[str, Any]:
    """The head (the stage's driver) and one worker pod per Ray Train worker."""
    settings = config.ray.rayjob
    workers = config.cluster.stages.for_stage(stage)
    # the head runs the stage's driver, which logs to MLflow: the chart's NetworkPolicy lets
    # only pods with the pipeline label reach it. The Ray node label opens the Ray ports
    # between these pods (and only them)
    pod_labels = labels | dict([PIPELINE_POD_LABEL, RAY_NODE_LABEL])
    env = _secret_env(config) + _mlflow_secret_env(config)
    replicas = worker_replicas(config, stage)
    return {
        "rayVersion": settings.ray_version,
        "authOptions": ray_auth_options(config.cluster),
        "headGroupSpec": {
            # num-cpus 0: training workers go to the worker pods, not next to the GCS
            "rayStartParams": {"dashboard-host": "0.0.0.0", "num-cpus": "0"},
            "template": _pod_template(
                "ray-head",
                image,
                _same_request_and_limit(settings.head_cpu, settings.head_memory),
                env,
                pod_labels,
                None,
                config.cluster,
            ),
        },
        "workerGroupSpecs": [
            {
                "groupName": "workers",
                "replicas": replicas,
                "minReplicas": replicas,
                "maxReplicas": replicas,
                "rayStartParams": {},
                "template": _pod_template(
                    "ray-worker",
                    image,
                    _pod_resources(workers),
                    env,
                    pod_labels,
                    workers,
                    config.cluster,
                ),
            }
        ],
    }


def ray_auth_options(cluster: ClusterConfig) -> dict[str, Any]:
    """Token auth on the RayJob's cluster. KubeRay gives the head, the workers, their
    wait-gcs-ready init containers and the submitter RAY_AUTH_MODE=token and RAY_AUTH_TOKEN from
    the Secret's ``auth_token`` key; without ``cluster.ray_token_secret`` it generates a Secret
    with a random token for this cluster alone (owned by it, deleted with it)."""
    if cluster.ray_token_secret is None:
        return {"mode": "token"}
    return {"mode": "token", "secretName": cluster.ray_token_secret}


def rayjob_yaml(config: GraftConfig, stage: RayStage, inputs: StageInputs, image: str) -> str:
    manifest = build_rayjob(config, stage, inputs, image)
    return yaml.dump(manifest, Dumper=_PlainDumper, sort_keys=False)


class _PlainDumper(yaml.SafeDumper):
    """Writes shared sub-objects out in full: no &anchors/*aliases in a manifest."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _pod_template(
    container_name: str,
    image: str,
    resources: dict[str, Any],
    env: list[dict[str, Any]],
    labels: dict[str, str],
    placement: StageResources | None,
    cluster: ClusterConfig,
) -> dict[str, Any]:
    container: dict[str, Any] = {
        # KubeRay takes the first container as the Ray container
        "name": container_name,
        "image": image,
        "resources": resources,
        "securityContext": RAY_CONTAINER_SECURITY,
    }
    if env:
        container["env"] = env
    pod: dict[str, Any] = {
        # Ray pods never call the Kubernetes API: no ServiceAccount token to steal from them
        "automountServiceAccountToken": False,
        "securityContext": _pod_security(),
        "containers": [container],
    }
    # the Ray pods get the pipeline pods' image pull secrets and /dev/shm (cluster block)
    pod.update(_pull_secrets(cluster))
    shm: tuple[EmptyDir, ...] = ()
    if cluster.shm_size:
        volume, path = SHM_VOLUME
        shm = ((volume, path, {"medium": "Memory", "sizeLimit": cluster.shm_size}),)
    _with_scratch(pod, shm)
    if placement is not None and placement.node_selector:
        pod["nodeSelector"] = dict(placement.node_selector)
    if placement is not None and placement.tolerations:
        pod["tolerations"] = [
            t.model_dump(exclude_none=True, mode="json") for t in placement.tolerations
        ]
    return {"metadata": {"labels": labels}, "spec": pod}


def _pull_secrets(cluster: ClusterConfig) -> dict[str, Any]:
    secrets = cluster.image_pull_secrets
    return {"imagePullSecrets": [{"name": name} for name in secrets]} if secrets else {}


def _pod_resources(stage: StageResources) -> dict[str, Any]:
    requests = {"cpu": stage.cpu_request, "memory": stage.memory_request}
    limits: dict[str, Any] = {"cpu": stage.cpu_limit, "memory": stage.memory_limit}
    if stage.accelerator_type:
        # KubeRay reads the worker's GPU count for Ray from this limit
        limits[stage.accelerator_type] = stage.accelerator_count
    resources = {
        "requests": {k: v for k, v in requests.items() if v is not None},
        "limits": {k: v for k, v in limits.items() if v is not None},
    }
    return {k: v for k, v in resources.items() if v}


def _same_request_and_limit(cpu: str, memory: str) -> dict[str, Any]:
    return {"requests": {"cpu": cpu, "memory": memory}, "limits": {"cpu": cpu, "memory": memory}}


def _pod_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": GRAFT_UID,
        "runAsGroup": GRAFT_UID,
        "fsGroup": GRAFT_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _with_scratch(
    pod: dict[str, Any], extra: tuple[tuple[str, str, dict[str, Any]], ...] = ()
) -> None:
    """Mount the scratch emptyDirs (and ``extra`` (name, path, emptyDir) volumes) into the
    pod's one container."""
    volumes: list[EmptyDir] = [(name, path, {}) for name, path in SCRATCH_VOLUMES] + list(extra)
    pod["containers"][0]["volumeMounts"] = [
        {"name": name, "mountPath": path} for name, path, _ in volumes
    ]
    pod["volumes"] = [{"name": name, "emptyDir": source} for name, _, source in volumes]


def _secret_env(config: GraftConfig) -> list[dict[str, Any]]:
    """S3 keys from the Kubernetes Secret ``cluster.s3_secret``, as in the pipeline's pods."""
    if not config.cluster.s3_secret:
        return []
    return [
        {
            "name": env_name,
            "valueFrom": {
                "secretKeyRef": {
                    "name": config.cluster.s3_secret,
                    "key": key,
                    # a RayJob always stages through S3 (ray.staging_uri): no keys, no job
                    "optional": False,
                }
            },
        }
        for key, env_name in sorted(config.cluster.s3_secret_keys.items())
    ]


def _mlflow_secret_env(config: GraftConfig) -> list[dict[str, Any]]:
    """The MLflow user from the Secret ``cluster.mlflow_secret``, as in the pipeline's pods:
    the head runs the stage's driver and the workers log metrics, both to the tracking server."""
    if not config.cluster.mlflow_secret:
        return []
    return [
        {
            "name": env_name,
            "valueFrom": {
                "secretKeyRef": {
                    "name": config.cluster.mlflow_secret,
                    "key": key,
                    "optional": False,
                }
            },
        }
        for key, env_name in sorted(config.cluster.mlflow_secret_keys.items())
    ]
