"""The KubeRay RayJob that `graft rayjob` prints, checked against the KubeRay CRD schema.

The schema is the RayJob CRD's ``openAPIV3Schema`` from ``../shared/crds/kuberay`` (KubeRay
v1.7), tightened so that an unknown field fails as under the API server's strict field
validation. No Kubernetes API server can run on these machines, so nothing here is applied to
a cluster or seen by the KubeRay operator: what the operator checks beyond the schema (name
length, a DNS-1035 name) is asserted directly.
"""

from __future__ import annotations

import copy
import re
import shlex
from collections.abc import Callable
from typing import Any

import jsonschema
import pytest
import yaml
from pod_security import pod_specs, restricted_violations
from typer.testing import CliRunner

from graft.cli.app import app
from graft.config import GraftConfig, config_from_json, load_config
from graft.remote.command import RayStage, StageInputs
from graft.remote.kuberay_manifest import GRAFT_HOME, MAX_RAYJOB_NAME, build_rayjob

IMAGE = "registry.example/graft:0.1.0-cpu"
RUN = "0f3c2a9b7d6e4c1a8b5e2d9f0a1b2c3d"

Obj = dict[str, Any]


@pytest.fixture(scope="module")
def validator(
    crd_validator: Callable[[str], jsonschema.Draft7Validator],
) -> jsonschema.Draft7Validator:
    return crd_validator("ray.io_rayjobs.yaml")


def _errors(validator: jsonschema.Draft7Validator, manifest: Obj) -> list[str]:
    return [
        "/".join(str(p) for p in e.path) + ": " + e.message
        for e in sorted(validator.iter_errors(manifest), key=lambda e: list(e.path))
    ]


def _inputs(stage: str) -> StageInputs:
    pretrained = "" if stage == "pretrain" else "s3://graft/runs/1/pretrained"
    return StageInputs("s3://graft/runs/1/dataset", f"s3://graft/runs/1/{stage}", RUN, pretrained)


def _gpu_config() -> GraftConfig:
    return load_config(
        preset="tiny",
        overrides=[
            "cluster.stages.pretrain.accelerator_type=nvidia.com/gpu",
            "cluster.stages.pretrain.accelerator_count=1",
            "cluster.stages.pretrain.node_selector={cloud.google.com/gke-accelerator: nvidia-l4}",
            "cluster.stages.pretrain.tolerations=[{key: nvidia.com/gpu, operator: Exists, "
            "effect: NoSchedule}]",
            "ray.rayjob.namespace=graft",
            "ray.rayjob.active_deadline_seconds=3600",
            "ray.rayjob.backoff_limit=2",
            "ray.rayjob.ttl_seconds_after_finished=120",
            "pretrain.num_workers=3",
        ],
    )


@pytest.mark.parametrize("stage", ["pretrain", "transfer-finetune", "tune"])
def test_rayjob_of_every_training_stage_matches_the_kuberay_crd(
    validator: jsonschema.Draft7Validator, stage: RayStage
) -> None:
    manifest = build_rayjob(load_config(preset="tiny"), stage, _inputs(stage), IMAGE)
    assert _errors(validator, manifest) == []


def test_gpu_rayjob_with_placement_matches_the_crd_and_carries_the_cluster_block(
    validator: jsonschema.Draft7Validator,
) -> None:
    config = _gpu_config()
    manifest = build_rayjob(config, "pretrain", _inputs("pretrain"), IMAGE)
    assert _errors(validator, manifest) == []

    spec = manifest["spec"]
    assert manifest["metadata"]["namespace"] == "graft"
    assert spec["submissionMode"] == "K8sJobMode"
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["ttlSecondsAfterFinished"] == 120
    assert spec["activeDeadlineSeconds"] == 3600
    assert spec["backoffLimit"] == 2
    (workers,) = spec["rayClusterSpec"]["workerGroupSpecs"]
    assert workers["replicas"] == workers["minReplicas"] == workers["maxReplicas"] == 3
    pod = workers["template"]["spec"]
    (container,) = pod["containers"]
    stage_block = config.cluster.stages.pretrain
    assert container["resources"] == {
        "requests": {"cpu": stage_block.cpu_request, "memory": stage_block.memory_request},
        "limits": {
            "cpu": stage_block.cpu_limit,
            "memory": stage_block.memory_limit,
            "nvidia.com/gpu": 1,
        },
    }
    assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert pod["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    head = spec["rayClusterSpec"]["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    for template in (head["template"], workers["template"], spec["submitterPodTemplate"]):
        assert template["spec"]["containers"][0]["image"] == IMAGE
        assert template["spec"]["securityContext"]["runAsNonRoot"] is True
    # S3 keys come from the Secret, never from the manifest
    env = {e["name"]: e for e in head["template"]["spec"]["containers"][0]["env"]}
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "graft-s3"
    assert "value" not in env["AWS_SECRET_ACCESS_KEY"]


def test_ray_pods_share_the_pipeline_pods_pull_secrets_and_shm(
    validator: jsonschema.Draft7Validator,
) -> None:
    config = load_config(
        preset="tiny", overrides=["cluster.image_pull_secrets=[regcred]", "cluster.shm_size=4Gi"]
    )
    manifest = build_rayjob(config, "tune", _inputs("tune"), IMAGE)
    assert _errors(validator, manifest) == []
    spec = manifest["spec"]
    (workers,) = spec["rayClusterSpec"]["workerGroupSpecs"]
    for template in (spec["rayClusterSpec"]["headGroupSpec"]["template"], workers["template"]):
        pod = template["spec"]
        assert pod["imagePullSecrets"] == [{"name": "regcred"}]
        shm = {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "4Gi"}}
        assert shm in pod["volumes"]
        mounts = pod["containers"][0]["volumeMounts"]
        assert {"name": "dshm", "mountPath": "/dev/shm"} in mounts
    # the submitter only runs `ray job submit`: it pulls the image, it needs no /dev/shm
    submitter = spec["submitterPodTemplate"]["spec"]
    assert submitter["imagePullSecrets"] == [{"name": "regcred"}]
    assert "dshm" not in [v["name"] for v in submitter["volumes"]]

    plain = build_rayjob(
        load_config(preset="tiny", overrides=["cluster.shm_size=null"]),
        "tune",
        _inputs("tune"),
        IMAGE,
    )
    head = plain["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    assert "imagePullSecrets" not in head
    assert "dshm" not in [v["name"] for v in head["volumes"]]


def test_head_and_workers_log_to_mlflow_as_the_user_in_its_secret(
    validator: jsonschema.Draft7Validator,
) -> None:
    """The head runs the stage's driver and the workers log metrics; the chart's MLflow
    answers 401 without a user, so both get it from the Secret (S3 Secret or not)."""
    config = load_config(preset="tiny", overrides=["cluster.s3_secret=null"])
    manifest = build_rayjob(config, "pretrain", _inputs("pretrain"), IMAGE)
    assert _errors(validator, manifest) == []
    cluster = manifest["spec"]["rayClusterSpec"]
    (workers,) = cluster["workerGroupSpecs"]
    for template in (cluster["headGroupSpec"]["template"], workers["template"]):
        env = {e["name"]: e for e in template["spec"]["containers"][0]["env"]}
        for name, key in (
            ("MLFLOW_TRACKING_USERNAME", "username"),
            ("MLFLOW_TRACKING_PASSWORD", "password"),
        ):
            assert "value" not in env[name]
            assert env[name]["valueFrom"]["secretKeyRef"] == {
                "name": "graft-mlflow-auth",
                "key": key,
                "optional": False,
            }
    plain = build_rayjob(
        load_config(preset="tiny", overrides=["cluster.mlflow_secret=null"]),
        "pretrain",
        _inputs("pretrain"),
        IMAGE,
    )
    head = plain["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert not [e for e in head.get("env", []) if e["name"].startswith("MLFLOW_TRACKING_")]


@pytest.mark.parametrize("stage", ["pretrain", "transfer-finetune", "tune"])
@pytest.mark.parametrize("gpu", [False, True])
def test_every_ray_pod_passes_the_restricted_pod_security_standard(
    stage: RayStage, gpu: bool
) -> None:
    """Under a namespace that enforces "restricted", a RayJob whose pods break it is refused
    and its caller waits until the deadline: every pod must pass, with a read-only root and
    writable scratch (/tmp, the image's home and working directory)."""
    config = _gpu_config() if gpu else load_config(preset="tiny")
    manifest = build_rayjob(config, stage, _inputs(stage), IMAGE)
    pods = pod_specs(manifest)
    assert len(pods) == 3  # the submitter, the head, the workers
    for index, pod in enumerate(pods):
        assert restricted_violations(pod, f"{stage} pod {index}") == []
        scratch = {m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
        assert {"/tmp", GRAFT_HOME} <= scratch


def test_the_pod_security_check_finds_what_the_standard_refuses() -> None:
    """The checker itself: a pod with the usual mistakes fails on each of them."""
    pod = {
        "hostNetwork": True,
        "volumes": [{"name": "host", "hostPath": {"path": "/"}}],
        "containers": [{"name": "c", "securityContext": {"privileged": True, "runAsUser": 0}}],
    }
    found = "\n".join(restricted_violations(pod, "p"))
    for problem in (
        "hostNetwork",
        "hostPath",
        "runAsNonRoot is not true",
        "runAsUser 0",
        "privileged",
        "allowPrivilegeEscalation",
        "drop ALL",
        "seccompProfile",
        "root filesystem is writable",
        "no writable /tmp",
    ):
        assert problem in found, problem


@pytest.mark.parametrize("stage", ["pretrain", "transfer-finetune", "tune"])
def test_entrypoint_runs_the_stage_as_a_driver_of_its_own_cluster(stage: RayStage) -> None:
    config = load_config(preset="tiny")
    manifest = build_rayjob(config, stage, _inputs(stage), IMAGE)
    argv = shlex.split(manifest["spec"]["entrypoint"])
    assert argv[:5] == ["python", "-m", "graft.cli", "stage", stage]
    options = dict(zip(argv[5::2], argv[6::2], strict=True))
    assert options["--dataset-dir"] == "s3://graft/runs/1/dataset"
    assert options["--output-dir"] == f"s3://graft/runs/1/{stage}"
    assert options["--parent-run-id"] == RUN
    sent = config_from_json(options["--config-json"])
    # the job joins the cluster it runs in and never submits itself again
    assert (sent.ray.mode, sent.ray.submit, sent.ray.address) == ("address", "driver", None)
    assert sent.model_dump(exclude={"ray"}) == config.model_dump(exclude={"ray"})
    env = yaml.safe_load(manifest["spec"]["runtimeEnvYAML"])["env_vars"]
    assert env["RAY_TRAIN_V2_ENABLED"] == "1"


def test_name_is_a_dns_label_within_kuberays_limit() -> None:
    for stage in ("pretrain", "transfer-finetune", "tune"):
        name = build_rayjob(load_config(), stage, _inputs(stage), IMAGE)["metadata"]["name"]
        assert len(name) <= MAX_RAYJOB_NAME
        assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name), name
        assert stage in name


def _set(manifest: Obj, path: str, value: Any) -> Obj:
    out = copy.deepcopy(manifest)
    node = out
    keys = path.split("/")
    for key in keys[:-1]:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is _DELETE:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return out


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("spec/ttlSecondsAfterFinished", "600"),  # a string where the CRD wants an integer
        ("spec/entrypoint", ["python", "-m", "graft.cli"]),  # a list, not a shell command
        ("spec/shutdownAfterJobFinishes", "yes"),
        ("spec/entryPoint", "python -m graft.cli stage pretrain"),  # misspelt field
        ("spec/rayClusterSpec/headGroupSpec/template", _DELETE),  # required
        ("spec/rayClusterSpec/workerGroupSpecs/0/groupName", _DELETE),  # required
        ("spec/rayClusterSpec/workerGroupSpecs/0/replicas", "two"),
        ("spec/rayClusterSpec/workerGroupSpecs/0/template/spec/containers/0/name", _DELETE),
    ],
)
def test_broken_manifest_fails_the_crd_schema(
    validator: jsonschema.Draft7Validator, path: str, value: Any
) -> None:
    """The check is real: each single defect is caught (guards against a vacuous schema)."""
    good = build_rayjob(load_config(preset="tiny"), "pretrain", _inputs("pretrain"), IMAGE)
    assert validator.is_valid(good)
    assert not validator.is_valid(_set(good, path, value))


def test_graft_rayjob_prints_one_plain_yaml_document(
    validator: jsonschema.Draft7Validator,
) -> None:
    result = CliRunner().invoke(
        app,
        [
            "rayjob",
            "transfer-finetune",
            "--dataset-dir",
            "/mnt/graft/dataset",
            "--pretrained-dir",
            "/mnt/graft/pretrained",
            "--output-dir",
            "/mnt/graft/finetuned",
            "--parent-run-id",
            RUN,
            "--image",
            IMAGE,
            "--preset",
            "tiny",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "&id" not in result.stdout and "*id" not in result.stdout  # no YAML aliases
    (manifest,) = list(yaml.safe_load_all(result.stdout))
    assert manifest["kind"] == "RayJob"
    assert _errors(validator, manifest) == []
    assert "--pretrained-dir /mnt/graft/pretrained" in manifest["spec"]["entrypoint"]


def test_graft_rayjob_refuses_a_stage_without_ray() -> None:
    result = CliRunner().invoke(
        app,
        ["rayjob", "evaluate", "--dataset-dir", "d", "--output-dir", "o", "--parent-run-id", RUN],
    )
    assert result.exit_code != 0
    assert "does not run on Ray" in str(result.exception)
