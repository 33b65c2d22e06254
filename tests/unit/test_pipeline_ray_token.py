"""The Ray token reaches the compiled pipeline's training tasks that join a Ray cluster.

With ``ray.mode=address`` Graft joins only clusters with token auth and refuses to start
without the token, so those tasks get ``RAY_AUTH_MODE=token`` and ``RAY_AUTH_TOKEN`` from key
``auth_token`` of the Secret ``cluster.ray_token_secret``: the same Secret and key KubeRay
reads for the chart's RayCluster. Tasks that never reach a Ray cluster get neither.
"""

from pathlib import Path

from compiled_pipeline import compile_tiny, executor_label, pipeline_tasks

from graft.remote.command import RAY_STAGES

ADDRESS = ["ray.mode=address", "ray.address=ray://graft-ray-head-svc:10001"]


def _executors(spec: dict) -> dict[str, str]:
    """task name -> executor label, for every task (the exit task too)"""
    return {task: executor_label(body) for task, body in pipeline_tasks(spec).items()}


def _token_secrets(executor: dict) -> list[dict]:
    return [
        s
        for s in executor.get("secretAsEnv", [])
        if any(p["envVar"] == "RAY_AUTH_TOKEN" for p in s["keyToEnv"])
    ]


def _env(spec: dict, label: str) -> dict[str, str]:
    container = spec["deploymentSpec"]["executors"][label]["container"]
    return {e["name"]: e["value"] for e in container.get("env", [])}


def test_training_tasks_that_join_a_cluster_get_its_token_from_the_secret(
    tmp_path: Path,
) -> None:
    spec, platform = compile_tiny(tmp_path, *ADDRESS)
    for task, label in _executors(spec).items():
        secrets = _token_secrets(platform[label])
        if task not in RAY_STAGES:
            assert secrets == [], task
            assert "RAY_AUTH_MODE" not in _env(spec, label), task
            continue
        (secret,) = secrets
        assert secret["secretName"] == "graft-ray-token"
        assert secret["keyToEnv"] == [{"secretKey": "auth_token", "envVar": "RAY_AUTH_TOKEN"}]
        # a missing Secret stops the pod: it must not try to join without the token
        assert secret["optional"] is False
        assert _env(spec, label)["RAY_AUTH_MODE"] == "token"


def test_the_token_secret_is_the_configured_one(tmp_path: Path) -> None:
    spec, platform = compile_tiny(tmp_path, *ADDRESS, "cluster.ray_token_secret=team-ray")
    label = _executors(spec)["pretrain"]
    assert [s["secretName"] for s in _token_secrets(platform[label])] == ["team-ray"]


def test_no_token_where_no_task_reaches_a_ray_cluster(tmp_path: Path) -> None:
    """Local mode starts its own Ray (with a token of its own); a RayJob is followed through
    the Kubernetes API only, never through its Ray dashboard."""
    for overrides in ([], ["ray.mode=rayjob", "ray.staging_uri=s3://b/p"]):
        spec, platform = compile_tiny(tmp_path, *overrides)
        for label in _executors(spec).values():
            assert _token_secrets(platform[label]) == []
            assert "RAY_AUTH_MODE" not in _env(spec, label)
