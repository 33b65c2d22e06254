"""Token authentication on every Ray cluster Graft starts on Kubernetes: the chart's RayCluster
and RayJob, and the RayJobs of ``ray.mode=rayjob``.

KubeRay (v1.7, ``ray-operator/controllers/ray/common/pod.go``) turns
``authOptions: {mode: token, secretName: S}`` into ``RAY_AUTH_MODE=token`` and
``RAY_AUTH_TOKEN`` from key ``auth_token`` of Secret S on the Ray containers, their
wait-gcs-ready init containers, the autoscaler and the submitter. No operator runs here, so
what is checked is the spec it reads, against its CRD schema (the other deploy tests).
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml
from test_chart import objects, one, render
from test_infra import SECRETS, run_bootstrap

from graft.config import RAY_TOKEN_SECRET_KEY, load_config
from graft.errors import ConfigError
from graft.remote.command import RAY_STAGES, StageInputs
from graft.remote.kuberay_manifest import build_rayjob

Obj = dict[str, Any]
TOKEN = {"mode": "token", "secretName": "graft-ray-token"}


def _rayjob(*overrides: str) -> Obj:
    config = load_config(preset="tiny", overrides=["ray.staging_uri=s3://b/p", *overrides])
    inputs = StageInputs("s3://b/dataset", "s3://b/out", "run1")
    return build_rayjob(config, "pretrain", inputs, "graft:test")


def test_the_chart_s_ray_cluster_and_ray_job_run_with_token_auth() -> None:
    objs = objects(render({"rayJob": {"enabled": True}}))
    assert one(objs, "RayCluster")["spec"]["authOptions"] == TOKEN
    assert one(objs, "RayJob")["spec"]["rayClusterSpec"]["authOptions"] == TOKEN
    other = objects(render({"rayAuth": {"secretName": "team-ray"}, "rayJob": {"enabled": True}}))
    assert one(other, "RayCluster")["spec"]["authOptions"]["secretName"] == "team-ray"
    assert one(other, "RayJob")["spec"]["rayClusterSpec"]["authOptions"]["secretName"] == (
        "team-ray"
    )


def test_the_chart_never_sets_ray_s_auth_variables_itself() -> None:
    """KubeRay adds RAY_AUTH_MODE and RAY_AUTH_TOKEN only where a container lacks them: one set
    by the chart (say, to disabled) would win over the token."""
    text = yaml.safe_dump(objects(render({"rayJob": {"enabled": True}})))
    assert "RAY_AUTH" not in text


def test_graft_s_rayjobs_run_with_token_auth_from_the_configured_secret() -> None:
    for stage in RAY_STAGES:
        config = load_config(preset="tiny", overrides=["ray.staging_uri=s3://b/p"])
        inputs = StageInputs("s3://b/dataset", "s3://b/out", "run1", "s3://b/pre", "s3://b/f")
        manifest = build_rayjob(config, stage, inputs, "graft:test")  # type: ignore[arg-type]
        assert manifest["spec"]["rayClusterSpec"]["authOptions"] == TOKEN
    named = _rayjob("cluster.ray_token_secret=team-ray")
    assert named["spec"]["rayClusterSpec"]["authOptions"]["secretName"] == "team-ray"
    # no Secret named: KubeRay generates a token for this cluster alone; never mode disabled
    own = _rayjob("cluster.ray_token_secret=null")
    assert own["spec"]["rayClusterSpec"]["authOptions"] == {"mode": "token"}
    assert "RAY_AUTH" not in yaml.safe_dump(named)


def test_rayjob_pods_get_no_kubernetes_api_token() -> None:
    spec = _rayjob()["spec"]
    templates = [
        spec["submitterPodTemplate"],
        spec["rayClusterSpec"]["headGroupSpec"]["template"],
        *(group["template"] for group in spec["rayClusterSpec"]["workerGroupSpecs"]),
    ]
    for template in templates:
        assert template["spec"]["automountServiceAccountToken"] is False
        assert "serviceAccountName" not in template["spec"]


def test_bootstrap_creates_the_token_secret_under_kuberay_s_key_and_never_prints_it() -> None:
    # KubeRay's utils.RAY_AUTH_TOKEN_SECRET_KEY
    assert RAY_TOKEN_SECRET_KEY == "auth_token"
    result = run_bootstrap(SECRETS)
    commands = [line[2:] for line in result.stdout.splitlines() if line.startswith("+ ")]
    secret = "kubectl -n kubeflow create secret generic graft-ray-token (keys: auth_token)"
    install = next(i for i, c in enumerate(commands) if "upgrade --install graft" in c)
    created = next(i for i, c in enumerate(commands) if c.startswith(secret))
    assert created < install  # the Ray pods need it when they start
    assert "--set-string rayAuth.secretName=graft-ray-token" in commands[install]
    assert "networkPolicy.kuberayOperator.namespace=kuberay-system" in commands[install]
    (compile_line,) = [c for c in commands if " compile " in c]
    assert "--set cluster.ray_token_secret=graft-ray-token" in compile_line
    # 32 random bytes as hex: nothing of that shape is printed
    assert not re.search(r"[0-9a-f]{32}", result.stdout + result.stderr)


def test_a_bad_token_secret_name_fails_at_load_with_the_fix() -> None:
    with pytest.raises(ConfigError, match=re.escape("cluster.ray_token_secret: 'Ray_Token'")):
        load_config(preset="tiny", overrides=["cluster.ray_token_secret=Ray_Token"])
