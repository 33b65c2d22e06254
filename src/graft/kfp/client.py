"""Upload the compiled pipeline to a KFP server, and submit, schedule and list its runs
(``kfp.Client``, connected through :mod:`graft.kfp.connection`).

The resolved config travels as the pipeline's only parameter, ``config_json``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from graft.config import GraftConfig
from graft.errors import ConfigError, PipelineServerError, StorageError
from graft.kfp.connection import connect, open_server, server_errors

log = logging.getLogger(__name__)

CONFIG_PARAMETER = "config_json"
PACKAGE_SUFFIXES = (".yaml", ".yml", ".tar.gz", ".tgz", ".zip")
# KFP's ScheduledWorkflow controller parses robfig/cron expressions with a seconds field.
_CRON_FIELDS = ("second", "minute", "hour", "day of month", "month", "day of week")
_CRON_FIELD_RE = re.compile(r"^[0-9A-Za-z*?/,#-]+$")


@dataclass(frozen=True)
class SubmittedRun:
    run_id: str
    url: str


@dataclass(frozen=True)
class ScheduledRun:
    recurring_run_id: str
    url: str


@dataclass(frozen=True)
class UploadedPipeline:
    pipeline_id: str
    version_name: str
    created: bool  # a new pipeline (its upload is its first version), not a new version
    url: str


@dataclass(frozen=True)
class RunStatus:
    run_id: str
    name: str
    state: str
    created_at: datetime | None
    url: str


# ----------------------------------------------------------------------------- validation


def validate_cron(cron: str) -> str:
    """Check KFP's 6-field cron form (seconds first) and return it with single spaces."""
    fields = cron.split()
    if len(fields) == 5:
        suggestion = " ".join(["0", *fields])
        raise ConfigError(
            f"cron '{cron}' has 5 fields, but KFP cron expressions have 6, seconds first; "
            f"use '{suggestion}'"
        )
    if len(fields) != 6:
        raise ConfigError(
            f"cron '{cron}' has {len(fields)} fields; KFP needs 6 "
            f"({', '.join(_CRON_FIELDS)}), e.g. '0 0 3 * * 1' for Mondays at 03:00"
        )
    for name, field in zip(_CRON_FIELDS, fields, strict=True):
        if not _CRON_FIELD_RE.match(field):
            raise ConfigError(f"cron '{cron}': the {name} field '{field}' is not valid")
    return " ".join(fields)


def check_package(package_path: Path) -> Path:
    """The compiled pipeline must exist and declare the ``config_json`` parameter."""
    if not package_path.is_file():
        raise StorageError(
            f"pipeline package {package_path} does not exist; run `graft compile` first "
            "or pass --package"
        )
    name = package_path.name
    if not name.endswith(PACKAGE_SUFFIXES):
        raise StorageError(
            f"pipeline package {package_path} must end with one of {', '.join(PACKAGE_SUFFIXES)}"
        )
    if name.endswith((".yaml", ".yml")):
        try:
            spec = next(iter(yaml.safe_load_all(package_path.read_text())), None)
        except yaml.YAMLError as exc:
            raise StorageError(
                f"pipeline package {package_path} is not valid YAML: {exc}"
            ) from None
        root = spec.get("root", {}) if isinstance(spec, dict) else {}
        parameters = root.get("inputDefinitions", {}).get("parameters", {})
        if CONFIG_PARAMETER not in parameters:
            raise StorageError(
                f"pipeline package {package_path} has no '{CONFIG_PARAMETER}' parameter, so it "
                "is not Graft's pipeline; rebuild it with `graft compile`"
            )
    return package_path


# ----------------------------------------------------------------------------- experiments


def _experiment_id(client: Any, name: str, namespace: str | None) -> str:
    """The id of the named experiment, created if it does not exist yet."""
    return str(client.create_experiment(name=name, namespace=namespace).experiment_id)


@dataclass(frozen=True)
class _ExperimentTarget:
    """What starting the compiled pipeline in an experiment needs, checked and connected."""

    host: str
    package: Path
    client: Any
    experiment_id: str


@contextlib.contextmanager
def _experiment_target(
    host: str | None,
    package_path: Path,
    experiment: str,
    namespace: str | None,
    token: str | None,
    insecure: bool,
) -> Iterator[_ExperimentTarget]:
    """Check the host, the package and the server, then connect and find or create the
    experiment. The caller's block runs inside ``server_errors`` too, so the call it makes
    on the client fails with the same PipelineServerError as the connection would."""
    package = check_package(package_path)
    base = open_server(host, token, insecure)
    with server_errors(base, token):
        client = connect(base, token, namespace)
        yield _ExperimentTarget(
            host=base,
            package=package,
            client=client,
            experiment_id=_experiment_id(client, experiment, namespace),
        )


def _required_id(reply: Any, field: str, host: str) -> str:
    """The id the server gave what it created; a reply without one (HTML from a proxy that
    answered 200 in KFP's place) is an error, never a run called 'None'."""
    value = getattr(reply, field, None)
    if not value:
        raise PipelineServerError(
            f"KFP at {host} answered without a {field}: the reply was not KFP's JSON. Check "
            "that --host/KFP_HOST is the KFP API and not a proxy's login page, and the token"
        )
    return str(value)


def run_url(host: str, run_id: str) -> str:
    return f"{host}/#/runs/details/{run_id}"


def recurring_run_url(host: str, recurring_run_id: str) -> str:
    return f"{host}/#/recurringrun/details/{recurring_run_id}"


# ----------------------------------------------------------------------------- operations


def submit_run(
    host: str | None,
    package_path: Path,
    config: GraftConfig,
    experiment: str,
    run_name: str | None = None,
    namespace: str | None = None,
    token: str | None = None,
    insecure: bool = False,
) -> SubmittedRun:
    """Start one run of the compiled pipeline with ``config`` as its ``config_json``."""
    name = run_name or f"{config.name} {datetime.now():%Y-%m-%d %H-%M-%S}"
    with _experiment_target(host, package_path, experiment, namespace, token, insecure) as target:
        run = target.client.run_pipeline(
            experiment_id=target.experiment_id,
            job_name=name,
            pipeline_package_path=str(target.package),
            params={CONFIG_PARAMETER: config.to_json()},
            service_account=config.cluster.service_account,
        )
    run_id = _required_id(run, "run_id", target.host)
    log.info("submitted run %s (%s) to experiment %s", run_id, name, experiment)
    return SubmittedRun(run_id=run_id, url=run_url(target.host, run_id))


def schedule_run(
    host: str | None,
    package_path: Path,
    config: GraftConfig,
    experiment: str,
    cron: str,
    job_name: str,
    max_concurrency: int = 1,
    catchup: bool = False,
    namespace: str | None = None,
    token: str | None = None,
    insecure: bool = False,
) -> ScheduledRun:
    """Create an enabled recurring run on KFP's 6-field cron schedule (seconds first)."""
    cron = validate_cron(cron)
    if max_concurrency < 1:
        raise ConfigError(f"max concurrency must be at least 1, got {max_concurrency}")
    with _experiment_target(host, package_path, experiment, namespace, token, insecure) as target:
        recurring = target.client.create_recurring_run(
            experiment_id=target.experiment_id,
            job_name=job_name,
            cron_expression=cron,
            max_concurrency=max_concurrency,
            no_catchup=not catchup,
            params={CONFIG_PARAMETER: config.to_json()},
            pipeline_package_path=str(target.package),
            enabled=True,
            service_account=config.cluster.service_account,
        )
    recurring_id = _required_id(recurring, "recurring_run_id", target.host)
    log.info("scheduled recurring run %s (%s) with cron %s", recurring_id, job_name, cron)
    return ScheduledRun(
        recurring_run_id=recurring_id, url=recurring_run_url(target.host, recurring_id)
    )


def upload_pipeline(
    host: str | None,
    package_path: Path,
    name: str,
    version_name: str | None = None,
    namespace: str | None = None,
    token: str | None = None,
    insecure: bool = False,
) -> UploadedPipeline:
    """Put the compiled pipeline on the server as pipeline ``name``, so that a person can
    start runs of it from the KFP UI. A pipeline of that name gets the package as a new
    version (``version_name``, default '<name> <timestamp>'), so uploading again (a second
    ``infra/bootstrap.sh``) adds a version instead of failing."""
    package = check_package(package_path)
    base = open_server(host, token, insecure)
    version = version_name or f"{name} {datetime.now():%Y-%m-%d %H-%M-%S}"
    with server_errors(base, token):
        client = connect(base, token, namespace)
        pipeline_id = _pipeline_id(client, name, namespace)
        created = pipeline_id is None
        if pipeline_id is None:
            pipeline = client.upload_pipeline(str(package), pipeline_name=name, namespace=namespace)
            pipeline_id = str(pipeline.pipeline_id)
            version = name  # KFP names a new pipeline's first version after the pipeline
        else:
            client.upload_pipeline_version(
                str(package), pipeline_version_name=version, pipeline_id=pipeline_id
            )
    log.info("uploaded pipeline %s (%s) as version %s", name, pipeline_id, version)
    return UploadedPipeline(
        pipeline_id, version, created, f"{base}/#/pipelines/details/{pipeline_id}"
    )


def _pipeline_id(client: Any, name: str, namespace: str | None) -> str | None:
    """The id of the pipeline named ``name``; None when there is none."""
    name_filter = json.dumps(
        {"predicates": [{"key": "display_name", "operation": "EQUALS", "stringValue": name}]}
    )
    found = client.list_pipelines(filter=name_filter, namespace=namespace).pipelines or []
    return str(found[0].pipeline_id) if found else None


def list_runs(
    host: str | None,
    experiment: str | None = None,
    page_size: int = 20,
    namespace: str | None = None,
    token: str | None = None,
    insecure: bool = False,
) -> list[RunStatus]:
    """The newest ``page_size`` runs, of one experiment or of all."""
    if page_size < 1:
        raise ConfigError(f"page size must be at least 1, got {page_size}")
    base = open_server(host, token, insecure)
    with server_errors(base, token):
        client = connect(base, token, namespace)
        experiment_id = None
        if experiment:
            try:
                found = client.get_experiment(experiment_name=experiment, namespace=namespace)
            except ValueError as exc:
                if not str(exc).startswith("No experiment is found"):
                    raise
                raise PipelineServerError(
                    f"KFP at {base} has no experiment '{experiment}'; submit a run first "
                    "(`graft submit`) or pass another --experiment"
                ) from None
            experiment_id = found.experiment_id
        response = client.list_runs(
            page_size=page_size,
            sort_by="created_at desc",
            experiment_id=experiment_id,
            namespace=namespace,
        )
    return [
        RunStatus(
            run_id=str(run.run_id),
            name=str(run.display_name or ""),
            state=str(run.state or "UNKNOWN"),
            created_at=run.created_at,
            url=run_url(base, str(run.run_id)),
        )
        for run in response.runs or []
    ]
