"""``graft upload``, ``submit``, ``schedule`` and ``runs``: the compiled pipeline on a KFP
server, through :mod:`graft.kfp.client`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from graft.cli.options import ConfigOption, PresetOption, SetOption, console, layered_config
from graft.config.runtime import KFP_HOST_ENV, KFP_TOKEN_ENV

HostOption = Annotated[
    str | None,
    typer.Option(
        "--host",
        envvar=KFP_HOST_ENV,
        help="KFP API/UI address, e.g. http://localhost:8080 after `kubectl port-forward -n "
        "kubeflow svc/ml-pipeline-ui 8080:80`.",
    ),
]
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar=KFP_TOKEN_ENV,
        show_default=False,
        help="Bearer token for a KFP server behind auth. Prefer the KFP_TOKEN variable: an "
        "option shows up in shell history. Never logged.",
    ),
]
InsecureOption = Annotated[
    bool,
    typer.Option(
        "--insecure",
        help="Send the token over plain http to a host other than this machine. Off: a "
        "token goes over https, or over http to localhost (a kubectl port-forward).",
    ),
]
NamespaceOption = Annotated[
    str | None,
    typer.Option("--namespace", help="Kubernetes namespace of a multi-user KFP (profile)."),
]
ExperimentOption = Annotated[
    str | None,
    typer.Option(
        "--experiment",
        "-e",
        help="KFP experiment, created if missing. Default: the config's "
        "tracking.experiment_name, so KFP and MLflow group runs alike.",
    ),
]
PackageOption = Annotated[
    Path,
    typer.Option(
        "--package", help="Compiled pipeline (`graft compile` writes pipelines/training.yaml)."
    ),
]
PipelineNameOption = Annotated[
    str | None,
    typer.Option("--name", help="Pipeline name in the KFP UI. Default: graft-training."),
]
PipelineVersionOption = Annotated[
    str | None,
    typer.Option(
        "--version",
        help="Version name when the pipeline exists already. Default: '<name> <timestamp>'.",
    ),
]
RunNameOption = Annotated[
    str | None,
    typer.Option("--run-name", "-r", help="Run name. Default: '<config name> <timestamp>'."),
]
CronOption = Annotated[
    str,
    typer.Option(
        "--cron",
        help="KFP cron: 6 fields, seconds first. '0 0 3 * * 1' = Mondays 03:00:00 (UTC "
        "on most clusters).",
    ),
]
RecurringRunNameOption = Annotated[
    str | None,
    typer.Option("--name", help="Recurring run name. Default: '<config name> <cron>'."),
]
MaxConcurrencyOption = Annotated[
    int, typer.Option(min=1, help="How many runs of this schedule may run at once.")
]
CatchupOption = Annotated[
    bool,
    typer.Option(help="After a pause, start every missed run (--catchup) or only the latest one."),
]
RunsExperimentOption = Annotated[
    str | None,
    typer.Option("--experiment", "-e", help="Only this KFP experiment's runs. Default: all."),
]
PageSizeOption = Annotated[int, typer.Option(min=1, help="How many of the newest runs.")]
DEFAULT_PACKAGE = Path("pipelines/training.yaml")


def upload(
    host: HostOption = None,
    package: PackageOption = DEFAULT_PACKAGE,
    name: PipelineNameOption = None,
    version: PipelineVersionOption = None,
    namespace: NamespaceOption = None,
    token: TokenOption = None,
    insecure: InsecureOption = False,
) -> None:
    """Upload the compiled pipeline to a KFP server and print its URL in the KFP UI.

    A person then starts runs from the UI, filling in the pipeline's parameters (preset,
    data_source, overrides, config_json). If a pipeline of that name exists, the package
    becomes a new version of it, so uploading again is safe.
    """
    from graft.kfp.client import upload_pipeline
    from graft.kfp.pipeline import PIPELINE_NAME

    uploaded = upload_pipeline(
        host,
        package,
        name or PIPELINE_NAME,
        version,
        namespace=namespace,
        token=token,
        insecure=insecure,
    )
    what = "created pipeline" if uploaded.created else f"added version {uploaded.version_name!r} to"
    console.print(f"[bold]graft[/bold]: {what} {escape(name or PIPELINE_NAME)}")
    typer.echo(uploaded.url)


def submit(
    host: HostOption = None,
    experiment: ExperimentOption = None,
    run_name: RunNameOption = None,
    package: PackageOption = DEFAULT_PACKAGE,
    config: ConfigOption = None,
    preset: PresetOption = None,
    set_: SetOption = None,
    namespace: NamespaceOption = None,
    token: TokenOption = None,
    insecure: InsecureOption = False,
) -> None:
    """Start one run of the compiled pipeline on a KFP server and print its URL.

    The resolved config (preset < --config < GRAFT_ environment < --set) is sent as the run's
    `config_json` parameter; paths in it (work_dir, data.source) are read inside the
    pipeline's pods.
    """
    from graft.kfp.client import submit_run

    resolved = layered_config(config, preset, set_)
    submitted = submit_run(
        host,
        package,
        resolved,
        experiment or resolved.tracking.experiment_name,
        run_name=run_name,
        namespace=namespace,
        token=token,
        insecure=insecure,
    )
    console.print(f"[bold]graft[/bold]: submitted run {submitted.run_id}")
    typer.echo(submitted.url)


def schedule(
    cron: CronOption,
    host: HostOption = None,
    experiment: ExperimentOption = None,
    name: RecurringRunNameOption = None,
    max_concurrency: MaxConcurrencyOption = 1,
    catchup: CatchupOption = False,
    package: PackageOption = DEFAULT_PACKAGE,
    config: ConfigOption = None,
    preset: PresetOption = None,
    set_: SetOption = None,
    namespace: NamespaceOption = None,
    token: TokenOption = None,
    insecure: InsecureOption = False,
) -> None:
    """Create a recurring run of the compiled pipeline on a KFP server and print its URL.

    Every scheduled run gets the same resolved config as its `config_json` parameter.

    A monitored retraining schedule: --set monitor.retrain_when=drift (or new_rows) makes
    each run compare the week's data with the champion's training rows first and end early,
    FINISHED, when nothing drifted; --set monitor.reference=challenger compares with the
    latest retrain's rows instead, so a shift whose retrain the gate refused is not flagged
    again every week; --set finetune.warm_start_from_champion=true skips
    pretrain for the champion's weights when it retrains; --set tune.warm_start_top_k=3
    starts the search from the champion search's 3 best trials. Splits stay put across
    snapshots (by content hash), and KFP's cache reuses data-prep and pretrain while the data
    is unchanged. docs/retraining.md has the whole loop.
    """
    from graft.kfp.client import schedule_run, validate_cron

    cron = validate_cron(cron)
    resolved = layered_config(config, preset, set_)
    scheduled = schedule_run(
        host,
        package,
        resolved,
        experiment or resolved.tracking.experiment_name,
        cron,
        name or f"{resolved.name} {cron}",
        max_concurrency=max_concurrency,
        catchup=catchup,
        namespace=namespace,
        token=token,
        insecure=insecure,
    )
    console.print(
        f"[bold]graft[/bold]: scheduled recurring run {scheduled.recurring_run_id} ({cron})"
    )
    typer.echo(scheduled.url)


def runs(
    host: HostOption = None,
    experiment: RunsExperimentOption = None,
    page_size: PageSizeOption = 20,
    namespace: NamespaceOption = None,
    token: TokenOption = None,
    insecure: InsecureOption = False,
) -> None:
    """List the newest runs on a KFP server: name, state, start time and URL."""
    from graft.kfp.client import list_runs

    found = list_runs(
        host, experiment, page_size, namespace=namespace, token=token, insecure=insecure
    )
    if not found:
        console.print("no runs")
        return
    table = Table(title="KFP runs")
    for column in ("name", "state", "created", "run id", "url"):
        table.add_column(column, overflow="fold")
    for item in found:
        created = f"{item.created_at:%Y-%m-%d %H:%M:%S}" if item.created_at else ""
        table.add_row(item.name, item.state, created, item.run_id, item.url)
    Console().print(table)  # stdout: the list is this command's output
