"""``graft tune`` and ``graft lr-find``: choosing finetune hyperparameters outside a pipeline
run, by a resumable search or by a learning-rate sweep."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, cast

import typer
from rich.table import Table

from graft.cli.options import (
    ConfigOption,
    PresetOption,
    SetOption,
    config_to_run_here,
    console,
)
from graft.cli.stage import DatasetDirOption, PretrainedDirOption
from graft.errors import ConfigError, GraftError

if TYPE_CHECKING:
    from graft.stages import TuneOutput
    from graft.train.stage_lr import StageSweep
    from graft.tune.session import TuneSession

TuneOutputDirOption = Annotated[
    Path,
    typer.Option(
        "--output-dir", "-o", help="Where the results go (and the session file --resume reads)."
    ),
]
TuneDatasetDirOption = Annotated[
    Path | None, typer.Option(help="Prepared dataset folder (data-prep's output).")
]
TunePretrainedDirOption = Annotated[
    Path | None, typer.Option(help="Pretrained model folder (model.pt, spec.json).")
]
TuneFinetunedDirOption = Annotated[
    Path | None,
    typer.Option(help="Untuned finetuned model to compare with (optional)."),
]
TuneParentRunOption = Annotated[
    str | None,
    typer.Option(
        help="MLflow run id of an existing pipeline run: tune under it (and resume its "
        "interrupted tune stage). Default: a new parent run."
    ),
]
ResumeOption = Annotated[
    bool,
    typer.Option(
        "--resume",
        help="Continue the interrupted search of --output-dir; finished trials are not rerun.",
    ),
]


def tune_(
    output_dir: TuneOutputDirOption,
    dataset_dir: TuneDatasetDirOption = None,
    pretrained_dir: TunePretrainedDirOption = None,
    finetuned_dir: TuneFinetunedDirOption = None,
    parent_run_id: TuneParentRunOption = None,
    resume: ResumeOption = False,
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
    from graft.remote.dispatch import tune as tune_stage
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
        resolved = config_to_run_here(config, preset, set_)
        session = start_session(
            resolved, dataset_dir, pretrained_dir, finetuned_dir, output_dir, parent_run_id
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
    _print_tune_result(result, session)


def _print_tune_result(result: TuneOutput, session: TuneSession) -> None:
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


SweptStageArgument = Annotated[
    str,
    typer.Argument(help="The stage whose starting model to sweep: pretrain or transfer-finetune."),
]
SweepOutputDirOption = Annotated[
    Path, typer.Option("--output-dir", "-o", help="Where lr_finder.png and .json go.")
]
MinLrOption = Annotated[
    float | None, typer.Option(help="Sweep start. Default: tune.lr_finder.min_lr.")
]
MaxLrOption = Annotated[
    float | None, typer.Option(help="Sweep end. Default: tune.lr_finder.max_lr.")
]
NumStepsOption = Annotated[
    int | None, typer.Option(help="Mini-batches swept. Default: tune.lr_finder.num_steps.")
]


def lr_find(
    name: SweptStageArgument,
    dataset_dir: DatasetDirOption,
    output_dir: SweepOutputDirOption = Path("lr-finder"),
    pretrained_dir: PretrainedDirOption = "",
    min_lr: MinLrOption = None,
    max_lr: MaxLrOption = None,
    num_steps: NumStepsOption = None,
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
    resolved = config_to_run_here(config, preset, set_)
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
    _print_sweep(name, sweep, plot, summary)


def _print_sweep(name: str, sweep: StageSweep, plot: Path, summary: Path) -> None:
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
