"""The MLflow model registry: the champion lookup, aliases, version and registry tags (the
promotion lock), registering the ONNX model and downloading a version's files. Every registry
call of Graft goes through this module; the client and runs come from graft.io.tracking.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from graft.config import GraftConfig
from graft.errors import RegistryError, TrackingError
from graft.io.tracking import PARENT_TAG, client_for, run_record, runs_tagged

# MLflow's error code for a model, version or alias the registry does not have: the only
# failure that means "no champion". A 5xx, a 403, a timeout or no server at all is an error.
NOT_FOUND = "RESOURCE_DOES_NOT_EXIST"


def _registry_error(config: GraftConfig, doing: str, exc: Exception) -> RegistryError:
    cause = " ".join(str(exc).split())[:500]
    return RegistryError(
        f"cannot {doing} model '{config.export.model_name}' in the registry of "
        f"{config.resolved_tracking_uri()}: {type(exc).__name__}: {cause}. Graft stops rather "
        "than go on without the registry's answer; check that the tracking server is up and "
        "that this user may read and write the model, then retry the stage"
    )


def registered_model(config: GraftConfig) -> Any | None:
    """``export.model_name`` with its aliases and tags; None only when the registry answers
    that it has no such model. Any other failure is a RegistryError."""
    from mlflow.exceptions import MlflowException

    try:
        return client_for(config).get_registered_model(config.export.model_name)
    except MlflowException as exc:
        if exc.error_code == NOT_FOUND:
            return None
        raise _registry_error(config, "read", exc) from exc
    except OSError as exc:
        raise _registry_error(config, "read", exc) from exc


def champion_alias(config: GraftConfig, alias: str = "champion") -> str | None:
    """The version number ``alias`` (``champion`` unless named) points to; None when the
    registry has no such model or the model no such alias. Raises RegistryError when the
    registry cannot answer (a short outage must not read as "no champion": the gate would
    pass)."""
    model = registered_model(config)
    version = None if model is None else (model.aliases or {}).get(alias)
    return None if version is None else str(version)


def champion_version(config: GraftConfig, alias: str = "champion") -> Any | None:
    """The registered version behind ``alias`` (``champion`` unless named), or None (see
    :func:`champion_alias`)."""
    from mlflow.exceptions import MlflowException

    number = champion_alias(config, alias)
    if number is None:
        return None
    try:
        return client_for(config).get_model_version(config.export.model_name, number)
    except (MlflowException, OSError) as exc:
        raise _registry_error(config, f"read version {number} of", exc) from exc


# the version tag export sets: the pipeline run (MLflow parent run) that registered the version
PIPELINE_RUN_TAG = "pipeline_run_id"


def champion_pipeline_run(config: GraftConfig) -> tuple[str, str | None] | None:
    """The champion's version number and the pipeline run that registered it: its
    ``pipeline_run_id`` tag, else the parent of the run it was logged in (None when neither
    says). None without a champion; RegistryError when the registry cannot answer."""
    version = champion_version(config)
    if version is None:
        return None
    tagged = (version.tags or {}).get(PIPELINE_RUN_TAG)
    if tagged:
        return str(version.version), str(tagged)
    logged_in = run_record(config, str(version.run_id)) if version.run_id else None
    parent = None if logged_in is None else logged_in.tags.get(PARENT_TAG)
    return str(version.version), parent


def registered_version(
    config: GraftConfig, name: str, alias: str | None = None, version: str | None = None
) -> Any:
    """Version ``version`` of registered model ``name``, or the one its ``alias`` points to
    (``model.pretrained=models:/NAME@ALIAS`` of an imported backbone). RegistryError, naming
    the URI, when the registry has no such model, version or alias or cannot answer."""
    from mlflow.exceptions import MlflowException

    uri = f"models:/{name}@{alias}" if alias is not None else f"models:/{name}/{version}"
    client = client_for(config)
    try:
        if alias is not None:
            return client.get_model_version_by_alias(name, alias)
        return client.get_model_version(name, str(version))
    except MlflowException as exc:
        cause = " ".join(str(exc).split())[:300]
        # a missing alias is INVALID_PARAMETER_VALUE, a missing model or version NOT_FOUND
        if exc.error_code in (NOT_FOUND, "INVALID_PARAMETER_VALUE"):
            raise RegistryError(
                f"{uri} is not in the registry of {config.resolved_tracking_uri()} ({cause}); "
                "set model.pretrained to a registered version (models:/NAME/VERSION) or alias"
            ) from exc
        raise RegistryError(f"cannot read {uri} from the registry: {cause}") from exc
    except OSError as exc:
        raise RegistryError(f"cannot read {uri} from the registry: {exc}") from exc


def registry_tags(config: GraftConfig) -> dict[str, str]:
    """The registered model's own tags (not its versions'); {} without the model."""
    model = registered_model(config)
    return {} if model is None else dict(model.tags or {})


def set_registry_tag(config: GraftConfig, key: str, value: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client_for(config).set_registered_model_tag(config.export.model_name, key, value)
    except (MlflowException, OSError) as exc:
        raise _registry_error(config, f"set tag {key} on", exc) from exc


def delete_registry_tag(config: GraftConfig, key: str) -> None:
    """Remove the registered model's tag ``key``; nothing if it has none."""
    from mlflow.exceptions import MlflowException

    try:
        client_for(config).delete_registered_model_tag(config.export.model_name, key)
    except MlflowException as exc:
        if exc.error_code != NOT_FOUND:
            raise _registry_error(config, f"delete tag {key} of", exc) from exc
    except OSError as exc:
        raise _registry_error(config, f"delete tag {key} of", exc) from exc


def stage_versions(config: GraftConfig, parent_run_id: str, stage: str) -> list[str]:
    """Versions of ``export.model_name`` that a ``stage`` run of pipeline run
    ``parent_run_id`` registered (an earlier attempt of that stage), lowest first."""
    runs = runs_tagged(config, {PARENT_TAG: parent_run_id, "graft.stage": stage})
    if not runs:
        return []
    quoted = ", ".join(f"'{run}'" for run in runs)
    found = client_for(config).search_model_versions(
        f"name = '{config.export.model_name}' AND run_id IN ({quoted})"
    )
    usable = [v for v in found if str(v.status) != "FAILED_REGISTRATION"]
    return sorted((str(v.version) for v in usable), key=int)


def set_alias(config: GraftConfig, alias: str, version: str) -> None:
    client_for(config).set_registered_model_alias(config.export.model_name, alias, version)


def set_version_tags(config: GraftConfig, version: str, tags: dict[str, str]) -> None:
    client = client_for(config)
    for key, value in tags.items():
        client.set_model_version_tag(config.export.model_name, version, key, value)


def _use_tracking_server(config: GraftConfig) -> None:
    """Point MLflow's fluent API (model logging and loading have no client form) at the
    config's tracking server and its registry."""
    import mlflow

    mlflow.set_tracking_uri(config.resolved_tracking_uri())
    mlflow.set_registry_uri(config.resolved_tracking_uri())


def register_model(
    config: GraftConfig,
    run_id: str,
    onnx_path: Path,
    example: Any,
    outputs: dict[str, Any],
) -> str:
    """Log the ONNX model at ``onnx_path`` into run ``run_id`` (MLflow's ``onnx`` flavor: it
    loads with MLflow and ONNX Runtime alone, without unpickling) with the signature of
    ``example`` -> ``outputs`` (arrays) and ``example`` as its input example, as a new version
    of ``export.model_name``; return the version."""
    import mlflow
    import mlflow.onnx
    import onnx
    from mlflow.models import infer_signature

    _use_tracking_server(config)
    with mlflow.start_run(run_id=run_id):
        info = mlflow.onnx.log_model(
            onnx.load(str(onnx_path)),
            name="model",
            registered_model_name=config.export.model_name,
            signature=infer_signature(example, outputs),
            input_example=example,
            # one file: the graph is small, and a server then fetches a single object
            save_as_external_data=False,
        )
    return str(info.registered_model_version)


def download_version_files(
    config: GraftConfig, version: Any, folder: str, into: Path, model_name: str | None = None
) -> Path:
    """The files that model ``version``'s run logged under ``folder``, downloaded into
    ``into``. Raises RegistryError when the run has no such folder. ``model_name``: the
    registered model the version belongs to (default ``export.model_name``)."""
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    name = model_name or config.export.model_name
    client = client_for(config)
    if not client.list_artifacts(version.run_id, folder):
        raise RegistryError(
            f"models:/{name}/{version.version} has no '{folder}' files: it "
            "was not registered by this Graft's export (an older Graft kept only a pickled "
            "model, which Graft no longer unpickles). Move the alias to a version this Graft "
            "registered, or delete it (MlflowClient().delete_registered_model_alias("
            f"'{name}', '<alias>')) so the next run is judged without it"
        )
    try:
        path = mlflow.artifacts.download_artifacts(
            run_id=version.run_id,
            artifact_path=folder,
            dst_path=str(into),
            tracking_uri=config.resolved_tracking_uri(),
        )
    except MlflowException as exc:
        raise RegistryError(
            f"cannot download models:/{name}/{version.version}'s '{folder}' files: {exc}"
        ) from exc
    return Path(path)


def download_model(config: GraftConfig, model_uri: str, into: Path) -> Path:
    """The MLflow model folder at ``model_uri`` (``models:/NAME@ALIAS``, ``models:/NAME/3``,
    ``runs:/ID/model`` or a local folder) downloaded into ``into`` from the config's tracking
    server and registry. RegistryError when there is no such model, TrackingError when the
    server cannot be reached or refuses."""
    return _download_artifacts(
        config,
        model_uri,
        into,
        "Run the pipeline until export registers one, or pass --model models:/NAME/VERSION",
    )


def download_pretrained(config: GraftConfig, uri: str, into: Path) -> Path:
    """The files at ``model.pretrained``'s MLflow URI (``runs:/ID/PATH``, ``models:/...``,
    ``mlflow-artifacts:/...``) downloaded into ``into``; errors as :func:`download_model`."""
    return _download_artifacts(
        config,
        uri,
        into,
        "Set model.pretrained to the artifact folder that holds the model's config.json and "
        "model.safetensors",
    )


def _download_artifacts(config: GraftConfig, uri: str, into: Path, fix: str) -> Path:
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    _use_tracking_server(config)
    try:
        path = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(into))
    except MlflowException as exc:
        where = config.resolved_tracking_uri()
        reason = " ".join(str(exc).split())[:300].rstrip(".")
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise RegistryError(f"no model at {uri} in {where}: {reason}. {fix}") from exc
        raise TrackingError(f"cannot download {uri} from {where}: {reason}") from exc
    return Path(path)
