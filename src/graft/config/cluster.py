"""How the compiled pipeline's pods run on Kubernetes (the ``cluster`` block): each task's
resources and placement, and the Secrets, ServiceAccount and pod settings of pipeline and
RayJob pods. Read at `graft compile` time; the local runner ignores it."""

from __future__ import annotations

import re
from typing import Final, Literal

from pydantic import Field, model_validator

from graft.config.base import Strict
from graft.config.runtime import MLFLOW_PASSWORD_ENV, MLFLOW_USERNAME_ENV, StageName


class TolerationConfig(Strict):
    key: str | None = None
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str | None = None
    effect: Literal["NoExecute", "NoSchedule", "PreferNoSchedule"] | None = None


class StageResources(Strict):
    """Kubernetes settings of one pipeline task (the local runner ignores them)."""

    cpu_request: str | None = None
    cpu_limit: str | None = None
    memory_request: str | None = None
    memory_limit: str | None = None
    accelerator_type: str | None = Field(
        default=None, description="e.g. nvidia.com/gpu; needs accelerator_count >= 1"
    )
    accelerator_count: int = Field(default=0, ge=0)
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[TolerationConfig] = Field(default_factory=list)
    retries: int = Field(default=0, ge=0, description="KFP task retries (pods lost, OOM)")

    @model_validator(mode="after")
    def _accelerator_pair(self) -> StageResources:
        if (self.accelerator_type is None) != (self.accelerator_count == 0):
            raise ValueError("set accelerator_type and accelerator_count together")
        return self


class LightStageResources(StageResources):
    cpu_request: str | None = "1"
    cpu_limit: str | None = "2"
    memory_request: str | None = "2Gi"
    memory_limit: str | None = "4Gi"


class TrainingStageResources(StageResources):
    cpu_request: str | None = "2"
    cpu_limit: str | None = "4"
    memory_request: str | None = "8Gi"
    memory_limit: str | None = "16Gi"
    retries: int = Field(default=2, ge=0, description="a retried task resumes from checkpoint")


class FinalizeTaskResources(StageResources):
    """The exit task reads and ends MLflow runs only; it must not be OOM-killed itself."""

    cpu_request: str | None = "250m"
    cpu_limit: str | None = "1"
    memory_request: str | None = "1Gi"
    memory_limit: str | None = "2Gi"


# The pipeline's exit task (graft.kfp.pipeline): after the stages, failed or not, it ends FAILED
# the MLflow runs a failed, cancelled or killed run left RUNNING.
FINALIZE_TASK: Final = "finalize-run"
# Every task of the compiled pipeline: the stages and the exit task.
PipelineTaskName = Literal[StageName, "finalize-run"]


class ClusterStages(Strict):
    """One block per task. Each block's defaults are its class's, so overriding one key
    (``cluster.stages.pretrain.accelerator_count=1``) keeps the others."""

    # opens the MLflow run and digests the data (reads the files, or lists the S3 objects)
    open_run: LightStageResources = Field(default_factory=LightStageResources)
    # compares the snapshot with the champion's statistics (reads the data, fits a small
    # domain classifier)
    monitor: LightStageResources = Field(default_factory=LightStageResources)
    data_prep: LightStageResources = Field(default_factory=LightStageResources)
    pretrain: TrainingStageResources = Field(default_factory=TrainingStageResources)
    # copies an external backbone's weights (a download and one forward pass)
    import_backbone: LightStageResources = Field(default_factory=LightStageResources)
    transfer_finetune: TrainingStageResources = Field(default_factory=TrainingStageResources)
    tune: TrainingStageResources = Field(default_factory=TrainingStageResources)
    evaluate: LightStageResources = Field(default_factory=LightStageResources)
    export: LightStageResources = Field(default_factory=LightStageResources)
    finalize_run: FinalizeTaskResources = Field(default_factory=FinalizeTaskResources)

    def for_stage(self, stage: PipelineTaskName) -> StageResources:
        resources: StageResources = getattr(self, stage.replace("-", "_"))
        return resources


# A Secret's name (DNS-1123 subdomain) and a memory quantity, as the API server checks them:
# a typo fails at `graft compile`, not when a pod is created.
_K8S_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_K8S_QUANTITY = re.compile(r"[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?")


class ClusterConfig(Strict):
    """How the compiled pipeline runs on Kubernetes; read at `graft compile` time."""

    s3_secret: str | None = Field(
        default="graft-s3",
        description="Kubernetes Secret with the S3 keys, in the namespace the pipeline's pods "
        "run in; required by every pod once the config names an s3:// location (a missing "
        "Secret stops the pod instead of running it without keys). None = no Secret: the pods "
        "use their own identity (IRSA, Workload Identity)",
    )
    s3_secret_keys: dict[str, str] = Field(
        default_factory=lambda: {
            "AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY",
        },
        description="secret key -> environment variable in every pipeline pod",
    )
    mlflow_secret: str | None = Field(
        default="graft-mlflow-auth",
        description="Kubernetes Secret with the MLflow user the pipeline's pods and RayJob "
        "pods log as (the chart's MLflow runs its basic-auth app and answers 401 without "
        "one): the chart's mlflow.auth.existingSecret. Every such pod logs to a tracking "
        "server, so the Secret is required: a missing one stops the pod instead of letting "
        "it run into 401s. None = no Secret, for a tracking server without authentication",
    )
    mlflow_secret_keys: dict[str, str] = Field(
        default_factory=lambda: {
            "username": MLFLOW_USERNAME_ENV,
            "password": MLFLOW_PASSWORD_ENV,
        },
        description="secret key -> environment variable (MLflow's client reads "
        "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD itself)",
    )
    ray_token_secret: str | None = Field(
        default="graft-ray-token",
        description="Kubernetes Secret holding the Ray clusters' authentication token under "
        "the key auth_token (KubeRay's key; infra/bootstrap.sh creates it with a random "
        "token). RayJobs (ray.mode=rayjob) run with token auth from it, and with "
        "ray.mode=address the training tasks' pods get it as RAY_AUTH_TOKEN, with "
        "RAY_AUTH_MODE=token (a missing Secret stops the pod). None = a RayJob gets a "
        "token KubeRay generates for it alone, and address-mode pods must get the token "
        "some other way",
    )
    stages: ClusterStages = Field(default_factory=ClusterStages)
    service_account: str | None = Field(
        default="graft-pipeline",
        description="Kubernetes ServiceAccount the runs `graft submit` and `graft schedule` "
        "create run as: the chart's own (graft-pipeline for release graft), the only one its "
        "Role, which may create RayJobs, is bound to. None = KFP's default account "
        "(pipeline-runner), which other pipelines share and the chart grants nothing",
    )
    image_pull_secrets: list[str] = Field(
        default_factory=list,
        description="Kubernetes Secrets (type dockerconfigjson) with which every pipeline pod "
        "and every RayJob pod pulls its image from a private registry",
    )
    shm_size: str | None = Field(
        default="2Gi",
        description="size of a memory-backed emptyDir mounted at /dev/shm in every pipeline "
        "and RayJob pod: Ray's object store and the DataLoader workers share memory there, "
        "and a container's own /dev/shm is 64 MiB. It counts against the pod's memory limit "
        "(None = the container's default /dev/shm)",
    )

    @model_validator(mode="after")
    def _kubernetes_names_and_quantities(self) -> ClusterConfig:
        secrets: dict[str, list[str | None]] = {
            "cluster.s3_secret": [self.s3_secret],
            "cluster.mlflow_secret": [self.mlflow_secret],
            "cluster.ray_token_secret": [self.ray_token_secret],
            "cluster.image_pull_secrets": list(self.image_pull_secrets),
        }
        for field, names in secrets.items():
            for name in names:
                if name is not None and not _K8S_NAME.fullmatch(name):
                    raise ValueError(
                        f"{field}: '{name}' is not a Kubernetes Secret name (lowercase "
                        "letters, digits, '-' and '.'); use the name `kubectl get secrets` "
                        "shows"
                    )
        if self.shm_size is not None and not _K8S_QUANTITY.fullmatch(self.shm_size):
            raise ValueError(
                f"cluster.shm_size '{self.shm_size}' is not a Kubernetes quantity; write e.g. "
                "2Gi or 512Mi, or null to keep the container's default /dev/shm"
            )
        return self
