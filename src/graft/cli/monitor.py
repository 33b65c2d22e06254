"""``graft monitor``: should the pipeline retrain on the new snapshot? (docs/monitoring.md)"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from graft.cli.options import ConfigOption, PresetOption, SetOption, config_to_run_here, console

if TYPE_CHECKING:
    from graft.config import GraftConfig
    from graft.stages.outputs import MonitorOutput

MonitorOutputOption = Annotated[
    Path | None,
    typer.Option(
        "--output-dir",
        "-o",
        help="Where the drift report (drift_report.html), drift.json and the plots go. "
        "Default: <work_dir>/monitor.",
    ),
]
MonitorParentOption = Annotated[
    str,
    typer.Option(
        "--parent-run-id",
        help="MLflow run id of a pipeline run to nest the monitor's run under. Default: a "
        "run of its own, ended when the command ends.",
    ),
]


def monitor(
    output_dir: MonitorOutputOption = None,
    parent_run_id: MonitorParentOption = "",
    config: ConfigOption = None,
    preset: PresetOption = None,
    set_: SetOption = None,
) -> None:
    """Compare the snapshot at data.source with the champion's train rows and say whether to
    retrain.

    Reads data.source as data-prep would, fetches the reference statistics registered with
    models:/<export.model_name>@champion, and measures per-feature drift (PSI over the train
    rows' decile bins, two-sample KS; for images: brightness, contrast and edge energy), the
    shift of the class shares and a domain classifier's AUC (train rows vs snapshot rows).
    monitor.retrain_when decides: always (default), drift (a figure above
    monitor.psi_threshold, label_psi_threshold or auc_threshold) or new_rows (at least
    monitor.new_rows rows the champion's data did not hold). Without a champion the answer is
    retrain. Prints the figures and the decision, writes an HTML report and logs both to
    MLflow; stdout gets the decision as one JSON line. The exit code is 0 either way.
    """
    from graft.io import tracking
    from graft.stages import monitor as monitor_stage

    resolved = config_to_run_here(config, preset, set_)
    out = output_dir or resolved.work_path / "monitor"
    output = monitor_stage.run(resolved, str(out), parent_run_id)
    if not parent_run_id and output.retrain:
        # the stage leaves the run it opened to the pipeline; here no pipeline follows
        tracking.finish_pipeline_run(resolved, output.parent_run_id)
    _print_figures(output, resolved)
    typer.echo(output.to_json())


def _print_figures(output: MonitorOutput, config: GraftConfig) -> None:
    monitor = config.monitor
    thresholds = {
        "max_feature_psi": f"{monitor.psi_threshold:g}",
        "label_psi": f"{monitor.label_psi_threshold:g}",
        "domain_auc": f"{monitor.auc_threshold:g}",
        "new_rows": f"{monitor.new_rows:,}",
    }
    table = Table(title=f"graft monitor: {config.data.source}")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("threshold", justify="right")
    for name, value in output.figures.items():
        shown = f"{value:,.0f}" if name.endswith("rows") else f"{value:.4f}"
        table.add_row(name, shown, thresholds.get(name, ""))
    if output.figures:
        console.print(table)
    champion = output.champion_version or "none"
    console.print(
        f"champion version: {champion}; policy: monitor.retrain_when={monitor.retrain_when}"
    )
    color = "yellow" if output.retrain else "green"
    console.print(f"[bold {color}]{escape(output.reason)}[/bold {color}]", soft_wrap=True)
    console.print(f"report: {output.report_path}", markup=False, soft_wrap=True)
