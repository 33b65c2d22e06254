"""``graft run``: the whole pipeline on this machine (KFP local runner, local Ray, local MLflow)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from graft.cli.options import (
    ConfigOption,
    PresetOption,
    SetOption,
    config_to_run_here,
    console,
)
from graft.config import GraftConfig

VerboseOption = Annotated[
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
]


CacheOption = Annotated[
    bool,
    typer.Option(
        "--cache/--no-cache",
        help=(
            "Reuse data-prep's and pretrain's outputs from an earlier run in the same work_dir "
            "while the data (its digest), the config and Graft's code are unchanged, as KFP's "
            "cache does on a cluster (the stage's line says 'cached'). --no-cache runs every "
            "stage."
        ),
    ),
]


def run(
    config: ConfigOption = None,
    preset: PresetOption = None,
    set_: SetOption = None,
    verbose: VerboseOption = False,
    cache: CacheOption = True,
) -> None:
    """Run the whole pipeline here: KFP local runner, local Ray, local MLflow.

    Shows a spinner while a stage runs and one line per stage with its status and wall time,
    then a summary. Each stage's whole output (the KFP runner's lines, the stage's
    stdout/stderr, Python logging, Ray's driver output) goes to <work_dir>/logs/<stage>.log,
    the runner's lines between stages to <work_dir>/logs/pipeline.log. When a stage fails,
    the last lines of its log are printed with the log's path. --verbose prints it all here
    instead, and writes no log files.

    A rerun on unchanged data and config reuses data-prep and pretrain (--no-cache: not):
    after a failed stage, it starts where the work changed. A rerun of a run that finished
    trains the same model again, which evaluate refuses to score twice on the same test split
    (evaluate.allow_repeat_test).
    """
    from graft.cli.progress import StageProgress, terminal_console
    from graft.data.prepare import check_source
    from graft.kfp.local_run import run_local, stage_log_dir

    resolved = config_to_run_here(config, preset, set_)
    console.print(f"[bold]graft[/bold]: checking data source {resolved.data.source}")
    check_source(resolved.data)
    if verbose:
        console.print(f"[bold]graft[/bold]: running the pipeline; outputs in {resolved.work_dir}")
        _print_summary(run_local(resolved, cache=cache), resolved)
        return
    logs = stage_log_dir(resolved)
    console.print(
        f"[bold]graft[/bold]: running the pipeline; outputs in {resolved.work_dir}, "
        f"each stage's log in {logs}"
    )
    with terminal_console() as terminal:
        summary = run_local(resolved, listener=StageProgress(terminal), cache=cache)
    _print_summary(summary, resolved, logs)


def _print_summary(
    summary: dict[str, object], config: GraftConfig, logs: Path | None = None
) -> None:
    table = Table(title="Graft pipeline run", show_header=False)
    table.add_column("what", no_wrap=True)
    table.add_column("value", overflow="fold")
    if not summary["retrained"]:
        table.add_row("retrained", "no: the monitor found no need (monitor.retrain_when)")
        table.add_row("reason", str(summary["reason"]))
        table.add_row("drift report", str(summary["report_path"]))
    else:
        _add_trained_rows(table, summary)
    table.add_row("MLflow", config.resolved_tracking_uri())
    if logs is not None:
        table.add_row("stage logs", f"{logs}/<stage>.log")
    console.print(table)
    console.print(f"Open the MLflow UI with: [bold]graft ui --work-dir {config.work_dir}[/bold]")


def _add_trained_rows(table: Table, summary: dict[str, object]) -> None:
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
