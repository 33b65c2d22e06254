"""Where Graft runs: tracking, the cluster, Ray, the image, the pod label and the environment
variables Graft reads or sets."""

from __future__ import annotations

from typing import Final, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from graft.config.base import Strict

# MLflow's own variable: honoured when the config names no tracking server.
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
# MLflow's client reads a tracking server's user from these (never from the URI, which is
# logged and shown); on a cluster they come from the Secret cluster.mlflow_secret.
MLFLOW_USERNAME_ENV = "MLFLOW_TRACKING_USERNAME"
MLFLOW_PASSWORD_ENV = "MLFLOW_TRACKING_PASSWORD"
# URIs of a tracking server, which pods on other machines reach; anything else is a file
REMOTE_TRACKING_SCHEMES = ("http://", "https://", "databricks")


# ----------------------------------------------------------------------------- runtime


def tracking_uri_credentials_problem(uri: str, where: str) -> str | None:
    """Why ``uri`` (named ``where``) may not be used, when it carries a user or password
    (``http://user:pass@host``); None when it carries none. The message never repeats them.

    A tracking URI is shown by `graft run`, written into errors and saved with every run's
    config, so a password in it would end up in logs and in MLflow itself."""
    try:
        parts = urlsplit(uri.strip())
    except ValueError:
        return None
    if "@" not in parts.netloc:
        return None
    host = parts.netloc.rpartition("@")[2]
    return (
        f"{where} carries credentials ({parts.scheme}://<user:password>@{host}); the URI is "
        "logged, shown and saved with each run's config. Drop them from the URI and give the "
        f"server's user as {MLFLOW_USERNAME_ENV} and {MLFLOW_PASSWORD_ENV} in the environment "
        "(on a cluster from the Secret cluster.mlflow_secret), which MLflow's client reads"
    )


class TrackingConfig(Strict):
    tracking_uri: str | None = Field(
        default=None,
        description="MLflow server URL or sqlite URI; None = MLFLOW_TRACKING_URI where the "
        "stage runs, else <work_dir>/mlflow.db (refused in a pipeline pod: it would vanish "
        "with the pod)",
    )
    experiment_name: str = "graft"
    artifact_location: str | None = Field(
        default=None,
        description="where a new experiment keeps run artifacts and registered model files, "
        "e.g. s3://bucket/mlflow (credentials from the AWS_* environment, on a cluster the "
        "cluster.s3_secret Secret); None = the tracking server's default",
    )

    @field_validator("tracking_uri")
    @classmethod
    def _no_credentials_in_uri(cls, uri: str | None) -> str | None:
        if uri is not None:
            problem = tracking_uri_credentials_problem(uri, "tracking.tracking_uri")
            if problem:
                raise ValueError(problem)
        return uri


StageName = Literal[
    "open-run",
    "monitor",
    "data-prep",
    "pretrain",
    "import-backbone",
    "transfer-finetune",
    "tune",
    "evaluate",
    "export",
]
# The pipeline branches after data-prep: it pretrains a backbone, or imports one from outside
# (model.family hf or graft) or the warm start's champion. open-run's `backbone` output says
# which (graft.stages.open_run).
BackboneSource = Literal["pretrain", "import"]
# model.family values whose backbone comes from model.pretrained, not from pretrain
EXTERNAL_FAMILIES: Final = ("hf", "graft")


# cluster.shm_size is mounted under this volume name in pipeline and RayJob pods alike
SHM_VOLUME = ("dshm", "/dev/shm")
# Every pipeline pod and RayJob pod carries it: the chart's NetworkPolicy lets only pods with
# this label reach the MLflow server.
PIPELINE_POD_LABEL = ("graft.dev/pipeline", "true")
# Heads and workers of every Ray cluster Graft runs (the chart's RayCluster and RayJobs, the
# RayJobs of ray.mode=rayjob) carry the first, KubeRay's submitter pods the second: the
# chart's NetworkPolicy opens all ports between Ray nodes and only the Jobs API and Ray Client
# ports to pipeline and submitter pods.
RAY_NODE_LABEL = ("graft.dev/ray", "node")
RAY_SUBMITTER_LABEL = ("graft.dev/ray", "submitter")
# The key of the Ray token Secret (cluster.ray_token_secret) that KubeRay reads: it is fixed
# by KubeRay (utils.RAY_AUTH_TOKEN_SECRET_KEY), so infra/bootstrap.sh creates it under it.
RAY_TOKEN_SECRET_KEY = "auth_token"
# The image of the compiled pipeline and of RayJobs unless `--image` or ray.rayjob.image names
# another.
DEFAULT_IMAGE = "ghcr.io/graft-ml/graft:0.1.0-cpu"
# Torch's intra-op threads on a training worker: one, since Ray gives a worker one CPU.
TORCH_THREADS_ENV = "GRAFT_TORCH_THREADS"
DEFAULT_TORCH_THREADS = 1
# The library's log level (graft.cli sets it up); DEBUG also keeps Ray Train's per-report log.
LOG_LEVEL_ENV = "GRAFT_LOG_LEVEL"
DEFAULT_LOG_LEVEL = "WARNING"


# ----------------------------------------------------------------------------- environment
# Every other environment variable Graft reads or sets, by name, with its default where it
# has one. The config's own layer (GRAFT_<SECTION>__<KEY>) is graft.config.env's.

# "0" keeps the workers' log lines (the loop's per-epoch progress) off the driver's console
RAY_LOG_TO_DRIVER_ENV = "GRAFT_RAY_LOG_TO_DRIVER"
DEFAULT_RAY_LOG_TO_DRIVER = "1"
# Set by the image's build, tagged on every pipeline run; without them: git, "local"
GIT_COMMIT_ENV = "GRAFT_GIT_COMMIT"
IMAGE_ENV = "GRAFT_IMAGE"
IMAGE_OUTSIDE_AN_IMAGE = "local"
# boto3's and MLflow's S3 endpoint (an S3-compatible server), in this order of precedence
S3_ENDPOINT_ENVS = ("AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL")
AWS_REGION_ENV = "AWS_DEFAULT_REGION"
DEFAULT_AWS_REGION = "us-east-1"
# Ray's own variables. Token auth on every Ray instance (graft.io.ray_auth)...
RAY_AUTH_MODE_ENV = "RAY_AUTH_MODE"
RAY_AUTH_TOKEN_ENV = "RAY_AUTH_TOKEN"
RAY_AUTH_TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"
RAY_TOKEN_AUTH = "token"
# ...and these for every driver, controller and worker it runs: Ray Train V2, and its
# timings and Tune's
RAY_TRAIN_V2_ENV = "RAY_TRAIN_V2_ENABLED"
RAY_TRAIN_ENV_DEFAULTS = {
    RAY_TRAIN_V2_ENV: "1",
    # Worker processes import torch: on a loaded 2-core machine 60 s is not always enough.
    "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "180",
    # The controller drains each worker's one-slot report queue once per health check
    # (2 s by default), so a report per epoch made every short epoch last 2 s.
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.25",
    # A trial that trains in its trainable checkpoints every epoch, keeping the last
    # num_to_keep, so Tune snapshots the experiment state every num_to_keep epochs (a
    # resumed search must not name a deleted checkpoint) and warns that this may be a
    # bottleneck; measured: 13-15 ms per epoch's report in all (bench/tune_overhead.py)
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    # A reused trial actor waits this long (2 s by default) for the last trial's thread to
    # end, which Tune stopped inside a report; past it the next trial fails to start. The
    # thread ends in milliseconds, unless a slow tracking server holds up its last call
    "TUNE_FUNCTION_THREAD_TIMEOUT_S": "30",
}
RAY_ADDRESS_ENV = "RAY_ADDRESS"  # address mode's cluster when ray.address is unset
RAY_API_SERVER_ADDRESS_ENV = "RAY_API_SERVER_ADDRESS"  # read by Ray's State and Jobs clients
RAY_SUBMITTED_JOB_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # present in a submitted Ray job
# The KFP backend gives every task pod these through the downward API (its driver and
# launcher read them); the local runners (SubprocessRunner, DockerRunner) set neither.
KFP_POD_ENV = ("KFP_POD_NAME", "KFP_POD_UID")
KFP_HOST_ENV = "KFP_HOST"  # the KFP server of `graft upload/submit/schedule/runs`
KFP_TOKEN_ENV = "KFP_TOKEN"  # its bearer token
KUBECONFIG_ENV = "KUBECONFIG"
DEFAULT_KUBECONFIG = "~/.kube/config"
# The temporary folder; the local pipeline runner points it at its run folder for the run
TMPDIR_ENV = "TMPDIR"


class RayJobConfig(Strict):
    """A KubeRay RayJob that runs one training stage on a cluster of its own (`graft rayjob`).

    Its worker pods take the stage's block of ``cluster.stages`` (requests, limits,
    accelerator, node selector, tolerations) and one pod per Ray Train worker; this block holds
    the rest.
    """

    image: str | None = Field(
        default=None,
        description="image of the Ray head, workers and submitter (None = the image "
        "`graft compile` puts in the pipeline)",
    )
    namespace: str | None = Field(
        default=None, description="metadata.namespace (None = kubectl's current namespace)"
    )
    ray_version: str = Field(
        default="2.60.0", description="rayClusterSpec.rayVersion: the Ray inside the image"
    )
    head_cpu: str = Field(
        default="1", description="head pod CPU, request = limit (the stage's driver runs there)"
    )
    head_memory: str = "4Gi"
    submitter_cpu: str = Field(default="500m", description="the `ray job submit` pod's CPU")
    submitter_memory: str = "512Mi"
    shutdown_after_job_finishes: bool = Field(
        default=True, description="delete the RayCluster when the job ends"
    )
    ttl_seconds_after_finished: int = Field(
        default=600,
        ge=0,
        description="seconds a finished job's cluster is kept (logs, dashboard) before deletion",
    )
    active_deadline_seconds: int | None = Field(
        default=7200, gt=0, description="fail the RayJob after this long (None = no deadline)"
    )
    backoff_limit: int = Field(
        default=0, ge=0, description="retries of a failed RayJob, each on a fresh cluster"
    )
    delete_when_done: Literal["on_success", "always", "never"] = Field(
        default="on_success",
        description="ray.mode=rayjob: delete the RayJob object after it ends (its cluster goes "
        "with shutdown_after_job_finishes either way); on_success keeps a failed one, its "
        "submitter pod and log, for `kubectl describe` and `kubectl logs`",
    )
    poll_s: float = Field(
        default=5.0, gt=0, description="ray.mode=rayjob: seconds between status and log polls"
    )


class RayConfig(Strict):
    """Where the training stages (pretrain, transfer-finetune, tune) get Ray.

    ``local`` starts Ray inside the stage's process. ``address`` uses an existing cluster: with
    ``submit: job`` the stage itself runs on the cluster as a Ray job submitted through the
    Jobs API (its log streams into the caller's, a retry of the same pipeline run re-attaches
    to the job instead of starting a second one, and a failed job fails the caller); with
    ``submit: driver`` the stage runs in this process and joins the cluster with
    ``ray.init(address)``. ``rayjob`` creates a KubeRay RayJob per stage (a Ray cluster of its
    own) through the Kubernetes API, follows its submitter's log, waits for its end and
    cleans it up; ``graft rayjob`` prints the same RayJob for ``kubectl apply``.
    """

    mode: Literal["local", "address", "rayjob"] = "local"
    address: str | None = Field(
        default=None,
        description="address mode: ray://host:10001 or auto (None = RAY_ADDRESS, else auto); "
        "with submit=job it also locates the dashboard when dashboard_address is unset",
    )
    submit: Literal["job", "driver"] = Field(
        default="job",
        description="address mode: run each training stage on the cluster as a Ray job (job) "
        "or here as a Ray driver (driver)",
    )
    dashboard_address: str | None = Field(
        default=None,
        description="submit=job: the Jobs API, http://<head>:8265 (None = derived from "
        "address); RAY_API_SERVER_ADDRESS or RAY_ADDRESS override it, as everywhere in Ray",
    )
    job_timeout_s: float | None = Field(
        default=None,
        gt=0,
        description="submit=job: stop a job still running after this long and fail the stage",
    )
    job_log_tail_lines: int = Field(
        default=40, ge=1, description="submit=job: lines of a failed job's log in the error"
    )
    staging_uri: str | None = Field(
        default=None,
        description="s3://bucket/prefix through which a stage that runs on the cluster "
        "(submit=job, mode=rayjob) gets its input folders and returns its output folder: the "
        "caller uploads them, the job downloads them and uploads its output, the caller "
        "downloads that. Required by mode=rayjob; None with submit=job passes the folders as "
        "they are, so the cluster must see the caller's filesystem",
    )
    storage_uri: str | None = Field(
        default=None,
        description="where Ray Train keeps checkpoints and run state: s3://bucket/prefix or a "
        "folder every node mounts. None = <staging_uri>/ray when staging_uri is set, else "
        "<work_dir>/ray on the driver's machine, which a multi-node cluster cannot use (its "
        "workers' checkpoints would stay on their own nodes): that is refused when joining one",
    )
    num_cpus: int | None = Field(default=None, ge=1, description="local mode CPU count")
    rayjob: RayJobConfig = Field(default_factory=RayJobConfig)

    @property
    def shared_train_storage(self) -> str | None:
        """The storage every node of a cluster reaches, if the config names one."""
        if self.storage_uri:
            return self.storage_uri
        return f"{self.staging_uri.rstrip('/')}/ray" if self.staging_uri else None

    @model_validator(mode="after")
    def _shared_locations_are_valid(self) -> RayConfig:
        if self.storage_uri is not None and not (
            self.storage_uri.startswith("s3://") or self.storage_uri.startswith("/")
        ):
            raise ValueError(
                f"ray.storage_uri '{self.storage_uri}' must be s3://bucket/prefix or an "
                "absolute path that every node mounts"
            )
        if self.staging_uri is not None and not self.staging_uri.startswith("s3://"):
            raise ValueError(
                f"ray.staging_uri '{self.staging_uri}' must be an s3://bucket/prefix that both "
                "this process and the cluster's pods can read and write"
            )
        if self.mode == "rayjob" and self.staging_uri is None:
            raise ValueError(
                "ray.mode=rayjob needs ray.staging_uri=s3://bucket/prefix: a RayJob's pods "
                "share no folder with this process, so inputs and the trained model travel "
                "through S3"
            )
        return self

    @model_validator(mode="after")
    def _dashboard_is_http(self) -> RayConfig:
        if self.dashboard_address and not self.dashboard_address.startswith(
            ("http://", "https://")
        ):
            raise ValueError(
                f"ray.dashboard_address '{self.dashboard_address}' must be the Jobs API's HTTP "
                "address, e.g. http://ray-head:8265; a ray:// client address goes in ray.address"
            )
        return self

    @property
    def submits_jobs(self) -> bool:
        """Whether a training stage runs on the cluster as a Ray job instead of here."""
        return self.mode == "address" and self.submit == "job"

    @property
    def runs_stages_elsewhere(self) -> bool:
        """Whether a training stage runs away from this process (a Ray job or a RayJob)."""
        return self.submits_jobs or self.mode == "rayjob"
