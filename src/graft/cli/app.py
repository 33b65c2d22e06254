"""``graft``: run the pipeline on this machine, compile it for a KFP server, open MLflow."""

from __future__ import annotations

import importlib.metadata
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Literal, cast

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from graft.config import DEFAULT_IMAGE, DEFAULT_PRESET, GraftConfig, load_config
from graft.config.env import environment_overrides
from graft.errors import ConfigError, GraftError
from graft.kfp.run_parameters import PRECEDENCE
from graft.remote.command import RayStage, StageInputs

app = typer.Typer(
    name="graft",
    help=(
        "Graft: a Kubernetes-native training pipeline. data-prep -> pretrain -> "
        "transfer-finetune -> tune -> evaluate -> export, as KFP v2 components training with "
        "Ray Train/Tune and tracking in MLflow. Runs on this machine with no cluster "
        "(`graft run`) or on Kubeflow (`graft compile`, then upload pipelines/training.yaml)."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML file laid over the preset.")
]
PresetOption = Annotated[
    str | None, typer.Option("--preset", "-p", help="Base preset: default or tiny (fast).")
]
SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        "-s",
        help="Override one key, e.g. --set finetune.epochs=3 (repeat). Wins over the "
        "environment's GRAFT_<SECTION>__<KEY> variables (GRAFT_FINETUNE__EPOCHS=3), which win "
        "over --config.",
    ),
]


def _load_config(
    config: Path | None, preset: str | None, overrides: list[str] | None
) -> GraftConfig:
    """The preset, the config file, the ``GRAFT_<SECTION>__<KEY>`` environment, then --set."""
    return load_config(config, preset, [*environment_overrides(os.environ), *(overrides or [])])


def _config(config: Path | None, preset: str | None, overrides: list[str] | None) -> GraftConfig:
    resolved = _load_config(config, preset, overrides)
    # Stages run in other processes (KFP tasks, Ray workers): pin the working folder.
    resolved.work_dir = str(Path(resolved.work_dir).resolve())
    return resolved


def _summary(summary: dict[str, object], config: GraftConfig, logs: Path | None = None) -> None:
    table = Table(title="Graft pipeline run", show_header=False)
    table.add_column("what", no_wrap=True)
    table.add_column("value", overflow="fold")
    table.add_row("test accuracy", f"{float(summary['accuracy']):.4f}")  # type: ignore[arg-type]
    table.add_row("majority baseline", f"{float(summary['baseline_accuracy']):.4f}")  # type: ignore[arg-type]
    table.add_row("gate", "passed" if summary["gate_passed"] else "refused")
    table.add_row(
        "registered model",
        f"{summary['model_name']} v{summary['model_version']} "
        f"(aliases: {', '.join(summary['aliases'])})",  # type: ignore[arg-type]
    )
    table.add_row("TorchScript", str(summary["torchscript"]))
    table.add_row("ONNX", str(summary["onnx"]))
    table.add_row("MLflow", config.resolved_tracking_uri())
    if logs is not None:
        table.add_row("stage logs", f"{logs}/<stage>.log")
    console.print(table)
    console.print(f"Open the MLflow UI with: [bold]graft ui --work-dir {config.work_dir}[/bold]")


@app.command()
def run(
    config: ConfigOption = None,
    preset: PresetOption = None,
    set_: SetOption = None,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            "-v",
            help=(
                "Stream every task's full output here as the KFP local runner prints it "
                "(executor dumps, the stage's stdout/stderr, logging, Ray, MLflow) instead of "
                "into <work_dir>/logs/<stage>.log."
            ),
        ),
    ] = False,
) -> None:
    """Run the whole pipeline here: KFP local runner, local Ray, local MLflow.

    Shows a spinner while a stage runs and one line per stage with its status and wall time,
    then a summary. Each stage's whole output (the KFP runner's lines, the stage's
    stdout/stderr, Python logging, Ray's driver output) goes to <work_dir>/logs/<stage>.log,
    the runner's lines between stages to <work_dir>/logs/pipeline.log. When a stage fails,
    the last lines of its log are printed with the log's path. --verbose prints it all here
    instead, and writes no log files.
    """
    from graft.cli.progress import StageProgress, terminal_console
    from graft.data.prepare import check_source
    from graft.kfp.local_run import run_local, stage_log_dir

    resolved = _config(config, preset, set_)
    console.print(f"[bold]graft[/bold]: checking data source {resolved.data.source}")
    check_source(resolved.data)
    if verbose:
        console.print(f"[bold]graft[/bold]: running the pipeline; outputs in {resolved.work_dir}")
        _summary(run_local(resolved), resolved)
        return
    logs = stage_log_dir(resolved)
    console.print(
        f"[bold]graft[/bold]: running the pipeline; outputs in {resolved.work_dir}, "
        f"each stage's log in {logs}"
    )
    with terminal_console() as terminal:
        summary = run_local(resolved, listener=StageProgress(terminal))
    _summary(summary, resolved, logs)


COMPILE_HELP = (
    "Write the KFP pipeline IR and one component spec per stage.\n\n"
    "The resolved config becomes the pipeline's default `config_json` parameter, and its "
    "`cluster` block sets each task's resources, accelerators, placement, retries, secrets, "
    "image pull secrets and /dev/shm. The pipeline also takes `preset` (default: the preset "
    "compiled with, --preset or default), `data_source` and `overrides`, which a person fills "
    "in the KFP UI.\n\n"
)


@app.command(name="compile", help=COMPILE_HELP + PRECEDENCE)
def compile_(
    image: Annotated[
        str | None, typer.Option(help="Container image the components run in.")
    ] = None,
    pipelines_dir: Annotated[Path, typer.Option(help="Where training.yaml goes.")] = Path(
        "pipelines"
    ),
    components_dir: Annotated[Path, typer.Option(help="Where <stage>.yaml go.")] = Path(
        "components"
    ),
    config: ConfigOption = None,
    preset: PresetOption = None,
    set_: SetOption = None,
) -> None:
    from graft.kfp.compile import compile_all

    resolved = _load_config(config, preset, set_)
    written = compile_all(
        pipelines_dir, components_dir, image or DEFAULT_IMAGE, resolved, preset or DEFAULT_PRESET
    )
    for path in written:
        console.print(f"wrote {path}")


@app.command(name="config")
def show_config(
    config: ConfigOption = None,
    preset: PresetOption = None,
    set_: SetOption = None,
) -> None:
    """Print the resolved configuration (preset < file < GRAFT_ environment < --set) as YAML."""
    import yaml

    resolved = _load_config(config, preset, set_)
    typer.echo(yaml.safe_dump(resolved.model_dump(mode="json"), sort_keys=False))


@app.command()
def ui(
    work_dir: Annotated[Path, typer.Option(help="The run folder holding mlflow.db.")] = Path(
        "work"
    ),
    port: Annotated[int, typer.Option(help="Port for the MLflow UI.")] = 5000,
) -> None:
    """Open the MLflow UI on the local tracking store of a run folder."""
    if not _mlflow_server_installed():
        raise GraftError(
            "the MLflow UI needs MLflow's server, which this install leaves out (the images "
            "carry only its client): pip install 'graft[server]'"
        )
    db = (work_dir / "mlflow.db").resolve()
    if not db.exists():
        raise GraftError(f"no MLflow store at {db}; run `graft run` first or pass --work-dir")
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        f"sqlite:///{db}",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    console.print(f"MLflow UI on http://127.0.0.1:{port} (Ctrl-C to stop)")
    raise typer.Exit(subprocess.call(command))


def _mlflow_server_installed() -> bool:
    # `mlflow` (the full distribution) brings the server and the web UI; `mlflow-skinny`,
    # which is all that Graft itself needs, has neither.
    try:
        importlib.metadata.version("mlflow")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


HostOption = Annotated[
    str | None,
    typer.Option(
        "--host",
        envvar="KFP_HOST",
        help="KFP API/UI address, e.g. http://localhost:8080 after `kubectl port-forward -n "
        "kubeflow svc/ml-pipeline-ui 8080:80`.",
    ),
]
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="KFP_TOKEN",
        show_default=False,
        help="Bearer token for a KFP server behind auth. Prefer the KFP_TOKEN variable: an "
        "option shows up in shell history. Never logged.",
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


@app.command()
def upload(
    host: HostOption = None,
    package: PackageOption = Path("pipelines/training.yaml"),
    name: Annotated[
        str | None,
        typer.Option("--name", help="Pipeline name in the KFP UI. Default: graft-training."),
    ] = None,
    version: Annotated[
        str | None,
        typer.Option(
            "--version",
            help="Version name when the pipeline exists already. Default: '<name> <timestamp>'.",
        ),
    ] = None,
    namespace: NamespaceOption = None,
    token: TokenOption = None,
) -> None:
    """Upload the compiled pipeline to a KFP server and print its URL in the KFP UI.

    A person then starts runs from the UI, filling in the pipeline's parameters (preset,
    data_source, overrides, config_json). If a pipeline of that name exists, the package
    becomes a new version of it, so uploading again is safe.
    """
    from graft.kfp.client import upload_pipeline
    from graft.kfp.pipeline import PIPELINE_NAME

    uploaded = upload_pipeline(
        host, package, name or PIPELINE_NAME, version, namespace=namespace, token=token
    )
    what = "created pipeline" if uploaded.created else f"added version {uploaded.version_name!r} to"
    console.print(f"[bold]graft[/bold]: {what} {escape(name or PIPELINE_NAME)}")
    typer.echo(uploaded.url)


@app.command()
def submit(
    host: HostOption = None,
    experiment: ExperimentOption = None,
    run_name: Annotated[
        str | None,
        typer.Option("--run-name", "-r", help="Run name. Default: '<config name> <timestamp>'."),
    ] = None,
    package: PackageOption = Path("pipelines/training.yaml"),
    config: ConfigOption = None,
    preset: PresetOption = None,
    set_: SetOption = None,
    namespace: NamespaceOption = None,
    token: TokenOption = None,
) -> None:
    """Start one run of the compiled pipeline on a KFP server and print its URL.

    The resolved config (preset < --config < GRAFT_ environment < --set) is sent as the run's
    `config_json` parameter; paths in it (work_dir, data.source) are read inside the
    pipeline's pods.
    """
    from graft.kfp.client import submit_run

    resolved = _load_config(config, preset, set_)
    submitted = submit_run(
        host,
        package,
        resolved,
        experiment or resolved.tracking.experiment_name,
        run_name=run_name,
        namespace=namespace,
        token=token,
    )
    console.print(f"[bold]graft[/bold]: submitted run {submitted.run_id}")
    typer.echo(submitted.url)


@app.command()
def schedule(
    cron: Annotated[
        str,
        typer.Option(
            "--cron",
            help="KFP cron: 6 fields, seconds first. '0 0 3 * * 1' = Mondays 03:00:00 (UTC "
            "on most clusters).",
        ),
    ],
    host: HostOption = None,
    experiment: ExperimentOption = None,
    name: Annotated[
        str | None,
        typer.Option("--name", help="Recurring run name. Default: '<config name> <cron>'."),
    ] = None,
    max_concurrency: Annotated[
        int, typer.Option(min=1, help="How many runs of this schedule may run at once.")
    ] = 1,
    catchup: Annotated[
        bool,
        typer.Option(
            help="After a pause, start every missed run (--catchup) or only the latest one."
        ),
    ] = False,
    package: PackageOption = Path("pipelines/training.yaml"),
    config: ConfigOption = None,
    preset: PresetOption = None,
    set_: SetOption = None,
    namespace: NamespaceOption = None,
    token: TokenOption = None,
) -> None:
    """Create a recurring run of the compiled pipeline on a KFP server and print its URL.

    Every scheduled run gets the same resolved config as its `config_json` parameter.
    """
    from graft.kfp.client import schedule_run, validate_cron

    cron = validate_cron(cron)
    resolved = _load_config(config, preset, set_)
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
    )
    console.print(
        f"[bold]graft[/bold]: scheduled recurring run {scheduled.recurring_run_id} ({cron})"
    )
    typer.echo(scheduled.url)


@app.command()
def runs(
    host: HostOption = None,
    experiment: Annotated[
        str | None,
        typer.Option("--experiment", "-e", help="Only this KFP experiment's runs. Default: all."),
    ] = None,
    page_size: Annotated[int, typer.Option(min=1, help="How many of the newest runs.")] = 20,
    namespace: NamespaceOption = None,
    token: TokenOption = None,
) -> None:
    """List the newest runs on a KFP server: name, state, start time and URL."""
    from graft.kfp.client import list_runs

    found = list_runs(host, experiment, page_size, namespace=namespace, token=token)
    if not found:
        console.print("no runs")
        return
    table = Table(title="KFP runs")
    for column in ("name", "state", "created", "run id", "url"):
        table.add_column(column, overflow="fold")
    for item in found:
        created = f"{item.created_at:%Y-%m-%d %H:%M:%S}" if item.created_at else ""
        table.add_row(item.name, item.state, created, item.run_id, item.url)
    Console().print(table)


@app.command(name="tune")
def tune_(
    output_dir: Annotated[
        Path,
        typer.Option(
            "--output-dir", "-o", help="Where the results go (and the session file --resume reads)."
        ),
    ],
    dataset_dir: Annotated[
        Path | None, typer.Option(help="Prepared dataset folder (data-prep's output).")
    ] = None,
    pretrained_dir: Annotated[
        Path | None, typer.Option(help="Pretrained model folder (model.pt, spec.json).")
    ] = None,
    finetuned_dir: Annotated[
        Path | None,
        typer.Option(help="Untuned finetuned model to compare with (optional)."),
    ] = None,
    parent_run_id: Annotated[
        str | None,
        typer.Option(
            help="MLflow run id of an existing pipeline run: tune under it (and resume its "
            "interrupted tune stage). Default: a new parent run."
        ),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue the interrupted search of --output-dir; finished trials are not rerun.",
        ),
    ] = False,
    config: ConfigOption = None,
    preset: PresetOption = None,
    set_: SetOption = None,
) -> None:
    """Run the tune stage alone: search the finetune space from a dataset and a pretrained model.

    The search ends after tune.num_samples trials, tune.time_budget_s seconds or
    tune.epoch_budget trial-epochs (all trials' epochs added up), whichever comes first, e.g.
    --set tune.num_samples=50 --set tune.epoch_budget=120. A killed search continues with
    `graft tune --resume --output-dir DIR` (same config, same inputs, same MLflow runs, and
    what is left of the epoch budget). While it runs it shows a progress bar in a terminal
    (else one line per trial as it ends), and each trial's MLflow run ends with how the trial
    ended (tag graft.trial_outcome: completed, early_stopped, cut, failed or
    before_first_epoch, the last with graft.trial_stop_reason, e.g. "epoch budget spent").
    """
    from graft.io.ray_runtime import shutdown_ray
    from graft.stages import tune as tune_stage
    from graft.tune.session import load_session, start_session

    if resume:
        if config or preset or set_ or dataset_dir or pretrained_dir or finetuned_dir:
            raise GraftError(
                "--resume continues a search with its saved config and inputs; drop "
                "--config/--preset/--set and the directory options"
            )
        session = load_session(output_dir)
    else:
        if dataset_dir is None or pretrained_dir is None:
            raise GraftError("graft tune needs --dataset-dir and --pretrained-dir (or --resume)")
        session = start_session(
            _config(config, preset, set_),
            dataset_dir,
            pretrained_dir,
            finetuned_dir,
            output_dir,
            parent_run_id,
        )
    console.print(
        f"[bold]graft[/bold]: tuning under MLflow run {session.parent_run_id}; resume with "
        f"graft tune --resume --output-dir {output_dir}"
    )
    try:
        result = tune_stage(
            session.config,
            session.dataset_dir,
            session.pretrained_dir,
            session.finetuned_dir,
            session.output_dir,
            session.parent_run_id,
        )
    finally:
        shutdown_ray()
    table = Table(title="Graft tune", show_header=False)
    table.add_column("what", no_wrap=True)
    table.add_column("value", overflow="fold")
    table.add_row(
        "trials",
        f"{result.trials} ({result.stopped_early} stopped early, "
        f"{result.before_first_epoch} before their first epoch)",
    )
    table.add_row("best validation accuracy", f"{result.val_accuracy:.4f} ({result.source})")
    for key, value in result.best_params.items():
        table.add_row(key, str(value))
    table.add_row("model", result.model_dir)
    table.add_row("results", session.output_dir)
    console.print(table)


StageNameArgument = Annotated[
    str, typer.Argument(help="The training stage: pretrain, transfer-finetune or tune.")
]
DatasetDirOption = Annotated[
    str, typer.Option("--dataset-dir", help="Prepared dataset folder (data-prep's output).")
]
StageOutputOption = Annotated[
    str, typer.Option("--output-dir", "-o", help="Where the stage writes its model.")
]
ParentRunOption = Annotated[
    str,
    typer.Option(
        "--parent-run-id", help="MLflow run id of the pipeline run (data-prep's parent_run_id)."
    ),
]
PretrainedDirOption = Annotated[
    str,
    typer.Option(help="Pretrained model folder: transfer-finetune and tune only."),
]
FinetunedDirOption = Annotated[
    str, typer.Option(help="tune only: the untuned finetuned model to compare with (optional).")
]


def _stage_inputs(
    name: str,
    dataset_dir: str,
    output_dir: str,
    parent_run_id: str,
    pretrained_dir: str,
    finetuned_dir: str,
) -> tuple[RayStage, StageInputs]:
    inputs = StageInputs(dataset_dir, output_dir, parent_run_id, pretrained_dir, finetuned_dir)
    inputs.check(name)  # refuses a stage that is not one of RayStage's
    return cast(RayStage, name), inputs


@app.command(name="stage")
def stage_(
    name: StageNameArgument,
    dataset_dir: DatasetDirOption,
    output_dir: StageOutputOption,
    parent_run_id: ParentRunOption,
    pretrained_dir: PretrainedDirOption = "",
    finetuned_dir: FinetunedDirOption = "",
    config_json: Annotated[
        str | None,
        typer.Option(
            "--config-json",
            help="The resolved config as JSON (what a submitted job receives), instead of "
            "--config/--preset/--set.",
        ),
    ] = None,
    config: ConfigOption = None,
    preset: PresetOption = None,
    set_: SetOption = None,
) -> None:
    """Run one training stage and print its output as a `GRAFT_STAGE_RESULT {json}` line.

    The stage runs here as the config's `ray` block says: local Ray, a driver of an existing
    cluster (ray.mode=address, ray.submit=driver), or a Ray job submitted to that cluster
    (ray.submit=job), or a KubeRay RayJob created through the Kubernetes API (ray.mode=rayjob);
    a job's log is relayed here. Jobs and RayJobs run this same command on the cluster as a
    driver; s3:// folders (ray.staging_uri) are downloaded first and the output uploaded after.
    """
    from dataclasses import asdict

    from graft import stages
    from graft.config import config_from_json
    from graft.io.ray_runtime import shutdown_ray
    from graft.remote.command import result_line
    from graft.remote.staging import localized, publish_result
    from graft.stages import TrainOutput, TuneOutput

    if config_json is not None and (config or preset or set_):
        raise GraftError("pass either --config-json or --config/--preset/--set, not both")
    resolved = (
        config_from_json(config_json) if config_json is not None else _config(config, preset, set_)
    )
    stage, requested = _stage_inputs(
        name, dataset_dir, output_dir, parent_run_id, pretrained_dir, finetuned_dir
    )
    # s3:// folders (ray.staging_uri) are worked on as local copies; the output goes back up
    with localized(requested) as inputs:
        try:
            output: TrainOutput | TuneOutput
            if stage == "pretrain":
                output = stages.pretrain(
                    resolved, inputs.dataset_dir, inputs.output_dir, inputs.parent_run_id
                )
            elif stage == "transfer-finetune":
                output = stages.finetune(
                    resolved,
                    inputs.dataset_dir,
                    inputs.pretrained_dir,
                    inputs.output_dir,
                    inputs.parent_run_id,
                )
            else:
                output = stages.tune(
                    resolved,
                    inputs.dataset_dir,
                    inputs.pretrained_dir,
                    inputs.finetuned_dir,
                    inputs.output_dir,
                    inputs.parent_run_id,
                )
        finally:
            shutdown_ray()
    typer.echo(result_line(publish_result(asdict(output), requested, inputs)))


@app.command(name="rayjob")
def rayjob(
    name: StageNameArgument,
    dataset_dir: DatasetDirOption,
    output_dir: StageOutputOption,
    parent_run_id: ParentRunOption,
    pretrained_dir: PretrainedDirOption = "",
    finetuned_dir: FinetunedDirOption = "",
    image: Annotated[
        str | None,
        typer.Option(help="Image of the Ray pods. Default: ray.rayjob.image, else compile's."),
    ] = None,
    config: ConfigOption = None,
    preset: PresetOption = None,
    set_: SetOption = None,
) -> None:
    """Print a KubeRay RayJob (ray.io/v1) that runs one training stage on its own cluster.

    Apply it with `graft rayjob pretrain ... | kubectl apply -f -`. The head runs the stage's
    driver; one worker pod per Ray Train worker takes the stage's `cluster.stages` resources;
    `ray.rayjob` sets the image, TTL, deadline and retries. The folders must be paths the
    cluster's pods can read (a shared volume or s3://).
    """
    from graft.remote.kuberay_manifest import rayjob_yaml

    resolved = _load_config(config, preset, set_)
    stage, inputs = _stage_inputs(
        name, dataset_dir, output_dir, parent_run_id, pretrained_dir, finetuned_dir
    )
    chosen = image or resolved.ray.rayjob.image or DEFAULT_IMAGE
    typer.echo(rayjob_yaml(resolved, stage, inputs, chosen), nl=False)


@app.command(name="lr-find")
def lr_find(
    name: Annotated[
        str,
        typer.Argument(
            help="The stage whose starting model to sweep: pretrain or transfer-finetune."
        ),
    ],
    dataset_dir: DatasetDirOption,
    output_dir: Annotated[
        Path, typer.Option("--output-dir", "-o", help="Where lr_finder.png and .json go.")
    ] = Path("lr-finder"),
    pretrained_dir: PretrainedDirOption = "",
    min_lr: Annotated[
        float | None, typer.Option(help="Sweep start. Default: tune.lr_finder.min_lr.")
    ] = None,
    max_lr: Annotated[
        float | None, typer.Option(help="Sweep end. Default: tune.lr_finder.max_lr.")
    ] = None,
    num_steps: Annotated[
        int | None, typer.Option(help="Mini-batches swept. Default: tune.lr_finder.num_steps.")
    ] = None,
    config: ConfigOption = None,
    preset: PresetOption = None,
    set_: SetOption = None,
) -> None:
    """Find a learning rate for a stage: the book's exponential LR sweep, on that stage's own
    starting model and training rows, in this process (no Ray).

    The LR grows geometrically from --min-lr to --max-lr over --num-steps mini-batches while
    the loss is recorded; the sweep stops when the loss blows up. The suggestion is an order
    of magnitude below the LR of the lowest (smoothed) loss, in units of the stage's
    `optimizer.lr` (a finetune phase's lr_scale is undone). Nothing is trained for real: the
    model is restored afterwards. Prints the `--set` that applies the suggestion, and writes
    the loss-vs-LR plot and the sweep as JSON.
    """
    from graft.train.stage_lr import sweep_stage, write_sweep

    if name not in ("pretrain", "transfer-finetune"):
        raise ConfigError(f"lr-find sweeps pretrain or transfer-finetune, not '{name}'")
    resolved = _config(config, preset, set_)
    defaults = resolved.tune.lr_finder
    sweep = sweep_stage(
        resolved,
        cast(Literal["pretrain", "transfer-finetune"], name),
        dataset_dir,
        output_dir / "scratch",
        pretrained_dir,
        min_lr=min_lr if min_lr is not None else defaults.min_lr,
        max_lr=max_lr if max_lr is not None else defaults.max_lr,
        num_steps=num_steps if num_steps is not None else defaults.num_steps,
    )
    plot, summary = write_sweep(sweep, output_dir)
    stopped = (
        f"loss blew up at {sweep.result.diverged_lr:.3g}"
        if sweep.result.diverged_lr is not None
        else "swept to the end without blowing up"
    )
    console.print(
        f"{name}: lowest loss at lr {sweep.best_lr:.3g}, {stopped}; "
        f"suggested lr [bold]{sweep.suggested_lr:.3g}[/bold]"
    )
    console.print(f"plot: {plot}\nsweep: {summary}")
    typer.echo(f"--set {sweep.lr_key}={sweep.suggested_lr:.3g}")


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _log_level() -> str:
    level = os.environ.get("GRAFT_LOG_LEVEL", "WARNING").strip().upper()
    if level not in LOG_LEVELS:
        raise GraftError(
            f"GRAFT_LOG_LEVEL={os.environ['GRAFT_LOG_LEVEL']!r} is not a log level; use one of "
            f"{', '.join(LOG_LEVELS)} (any case)"
        )
    return level


def main() -> None:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    try:
        logging.basicConfig(level=_log_level())
        app()
    except GraftError as exc:
        # escaped: a message may quote a log line with [brackets] that rich would parse
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        sys.exit(2)
    except RuntimeError as exc:
        # with --verbose KFP's local runner raises RuntimeError naming the failed task; its
        # log is above (a quiet run raises PipelineStageError, a GraftError)
        console.print(f"[red]error:[/red] {str(exc).splitlines()[0]}")
        sys.exit(1)


if __name__ == "__main__":
    main()
