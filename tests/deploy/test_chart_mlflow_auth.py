"""MLflow's authentication in the chart (charts/graft), rendered by the real Helm engine.

The server runs MLflow's basic-auth app; its admin user, its Flask key and the database
password reach it as Secret-backed variables only. tests/integration/test_mlflow_auth.py runs
the same auth settings (this chart's ConfigMap) on a real `mlflow server`.
"""

from __future__ import annotations

import configparser
import re

import pytest
from test_chart import NAMESPACE, RELEASE, VALUE_SETS, Obj, containers, helm, objects, one, render

AUTH_SECRET = "graft-mlflow-auth"
CONFIG_PATH = "/etc/mlflow-auth/basic_auth.ini"


def _mlflow(objs: list[Obj]) -> tuple[Obj, Obj]:
    deploy = one(objs, "Deployment", f"{RELEASE}-mlflow")
    (container,) = deploy["spec"]["template"]["spec"]["containers"]
    return deploy, container


def auth_ini(objs: list[Obj]) -> configparser.ConfigParser:
    """The basic-auth app's settings as the chart renders them."""
    config_map = one(objs, "ConfigMap", f"{RELEASE}-mlflow-auth-config")
    parser = configparser.ConfigParser()
    parser.read_string(config_map["data"]["basic_auth.ini"])
    return parser


def _secret_ref(env: dict[str, Obj], name: str) -> Obj:
    assert "value" not in env[name], f"{name} is a literal"
    ref: Obj = env[name]["valueFrom"]["secretKeyRef"]
    return ref


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_mlflow_runs_the_basic_auth_app_with_its_users_from_a_secret(name: str) -> None:
    objs = objects(render(VALUE_SETS[name]))
    deploy, container = _mlflow(objs)
    args = container["args"]
    assert args[args.index("--app-name") + 1] == "basic-auth"
    env = {e["name"]: e for e in container["env"]}
    assert _secret_ref(env, "MLFLOW_AUTH_ADMIN_USERNAME") == {
        "name": AUTH_SECRET,
        "key": "username",
    }
    assert _secret_ref(env, "MLFLOW_AUTH_ADMIN_PASSWORD") == {
        "name": AUTH_SECRET,
        "key": "password",
    }
    # one static key for every replica and worker (MLflow refuses to start without one)
    assert _secret_ref(env, "MLFLOW_FLASK_SERVER_SECRET_KEY") == {
        "name": AUTH_SECRET,
        "key": "flask-secret-key",
    }
    assert _secret_ref(env, "PGPASSWORD")["key"] == "password"
    # the settings file is the chart's ConfigMap, mounted where the variable points
    assert env["MLFLOW_AUTH_CONFIG_PATH"]["value"] == CONFIG_PATH
    pod = deploy["spec"]["template"]["spec"]
    (mount,) = [m for m in container["volumeMounts"] if CONFIG_PATH.startswith(m["mountPath"])]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["configMap"]["name"] == f"{RELEASE}-mlflow-auth-config"
    assert "checksum/auth-config" in deploy["spec"]["template"]["metadata"]["annotations"]
    ini = auth_ini(objs)["mlflow"]
    # a user sees only what it created or was granted: READ would show every run to every user
    assert ini["default_permission"] == "NO_PERMISSIONS"
    assert ini["authorization_function"] == "mlflow.server.auth:authenticate_request_basic_auth"
    # a revoked password stops working within a minute on every worker
    assert 0 < int(ini["auth_cache_ttl_seconds"]) <= 60
    # the users live in the tracking store's database, which outlives the pods
    assert ini["database_uri"] == env["MLFLOW_BACKEND_STORE_URI"]["value"]
    assert ini["database_uri"].startswith("postgresql+psycopg2://")


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_no_password_in_an_argument_or_a_config_map(name: str) -> None:
    objs = objects(render(VALUE_SETS[name]))
    for obj in objs:
        for _, container in containers(obj):
            for arg in [*container.get("command", []), *container.get("args", [])]:
                # $(VAR) would be expanded into the process's argv by the kubelet
                assert "$(" not in arg and not re.search(r"pass|secret|://[^/\s]*@", arg, re.I)
    for config_map in [o for o in objs if o["kind"] == "ConfigMap"]:
        text = "\n".join(config_map["data"].values())
        assert not re.search(r"admin_password|admin_username|://[^/@\s]*:[^/@\s]*@", text)


def test_auth_has_no_off_switch_and_takes_no_password_value() -> None:
    with pytest.raises(helm.HelmValuesError, match="'enabled' not allowed"):
        render({"mlflow": {"auth": {"enabled": False}}})
    with pytest.raises(helm.HelmValuesError, match="'password' not allowed"):
        render({"mlflow": {"auth": {"password": "hunter2"}}})


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_the_charts_ray_pods_log_to_mlflow_as_the_user_in_the_secret(name: str) -> None:
    objs = objects(render(VALUE_SETS[name]))
    ray = [o for o in objs if o["kind"] in ("RayCluster", "RayJob")]
    assert ray
    for obj in ray:
        for _, container in containers(obj):
            env = {e["name"]: e for e in container.get("env", [])}
            if "MLFLOW_TRACKING_URI" not in env:
                continue  # the RayJob's submitter only runs `ray job submit`
            assert _secret_ref(env, "MLFLOW_TRACKING_USERNAME") == {
                "name": AUTH_SECRET,
                "key": "username",
            }
            assert _secret_ref(env, "MLFLOW_TRACKING_PASSWORD") == {
                "name": AUTH_SECRET,
                "key": "password",
            }


def test_notes_say_where_the_user_is_without_printing_it() -> None:
    notes = render()["graft/templates/NOTES.txt"]
    assert f"get secret {AUTH_SECRET}" in notes
    assert f"kubectl -n {NAMESPACE}" in notes
    assert "export MLFLOW_TRACKING_PASSWORD=" in notes
