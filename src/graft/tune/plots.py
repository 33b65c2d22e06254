"""Plots of a finished search: the metric trial by trial with the best so far, each searched
parameter against the metric, (given enough trials) fANOVA parameter importances, and the best
metric against the trial-epochs spent (graft.tune.progress)."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd

from graft.config import SearchDimension
from graft.io.plotting import save_figure
from graft.tune.progress import SearchProgress, plot_progress_by_trial_epochs

log = logging.getLogger(__name__)

CONFIG_PREFIX = "config/"


def trial_order(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows in the order Tune created the trials: by the counter ending ids like
    ``33d43_00004`` (random, grid); Tune's results table is already in that order otherwise
    (Optuna, HyperOpt ids are bare hex)."""
    counter = frame["trial_id"].astype(str).str.extract(r"_(\d+)$")[0]
    if counter.isna().any():
        return frame
    return frame.assign(_order=counter.astype(int)).sort_values("_order").drop(columns="_order")


def plot_metric_by_trial(frame: pd.DataFrame, metric: str, mode: str, path: Path) -> Path:
    rows = trial_order(frame).dropna(subset=[metric]).reset_index(drop=True)
    values = rows[metric].astype(float)
    best = values.cummax() if mode == "max" else values.cummin()
    complete = rows.get("fit_complete", pd.Series([1.0] * len(rows))).fillna(0).astype(bool)
    xs = list(range(1, len(rows) + 1))
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.scatter(
        [x for x, c in zip(xs, complete, strict=True) if c],
        [v for v, c in zip(values, complete, strict=True) if c],
        label="trial (ran to the end)",
        color="tab:blue",
    )
    ax.scatter(
        [x for x, c in zip(xs, complete, strict=True) if not c],
        [v for v, c in zip(values, complete, strict=True) if not c],
        label="trial (stopped early)",
        color="tab:orange",
        marker="x",
    )
    ax.step(xs, best, where="post", color="black", label="best so far")
    ax.set_xlabel("trial (in creation order)")
    ax.set_ylabel(f"{metric} (last report)")
    ax.set_title(f"Search progress: {metric} by trial")
    ax.legend(loc="best")
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)


def plot_params_vs_metric(
    frame: pd.DataFrame, space: dict[str, SearchDimension], metric: str, path: Path
) -> Path:
    keys = list(space)
    columns = min(3, len(keys))
    rows_n = math.ceil(len(keys) / columns)
    fig, axes = plt.subplots(rows_n, columns, figsize=(4.2 * columns, 3.4 * rows_n), squeeze=False)
    for index, key in enumerate(keys):
        ax = axes[index // columns][index % columns]
        column = CONFIG_PREFIX + key
        data = frame.dropna(subset=[metric])
        if column not in data:
            ax.set_visible(False)
            continue
        data = data.dropna(subset=[column])
        dim = space[key]
        if dim.type == "choice":
            labels = [str(v) for v in dim.values or []]
            xs: Any = [labels.index(str(v)) if str(v) in labels else -1 for v in data[column]]
            ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
        else:
            xs = data[column].astype(float)
            if dim.type == "loguniform":
                ax.set_xscale("log")
        ax.scatter(xs, data[metric].astype(float), alpha=0.8)
        ax.set_xlabel(key)
        ax.set_ylabel(metric)
    for index in range(len(keys), rows_n * columns):
        axes[index // columns][index % columns].set_visible(False)
    fig.suptitle(f"Searched parameters vs {metric}")
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)


def param_importances(
    frame: pd.DataFrame, space: dict[str, SearchDimension], metric: str, mode: str
) -> dict[str, float] | None:
    """fANOVA importances (Optuna's evaluator) over the finished trials; None with fewer than 3
    trials, no parameter that varied, or every trial scoring the same (no variance to explain:
    fANOVA raises on it)."""
    import optuna

    data = frame.dropna(subset=[metric])
    varied = [
        k for k in space if CONFIG_PREFIX + k in data and data[CONFIG_PREFIX + k].nunique() > 1
    ]
    if len(data) < 3 or not varied or data[metric].nunique() < 2:
        log.info(
            "param importance skipped: %d trials, %d varied parameters, %d distinct %s values",
            len(data),
            len(varied),
            data[metric].nunique(),
            metric,
        )
        return None
    distributions: dict[str, optuna.distributions.BaseDistribution] = {}
    for key in varied:
        dim = space[key]
        if dim.type == "choice":
            distributions[key] = optuna.distributions.CategoricalDistribution(
                list(dim.values or [])
            )
        elif dim.type == "int":
            assert dim.low is not None and dim.high is not None
            distributions[key] = optuna.distributions.IntDistribution(int(dim.low), int(dim.high))
        else:
            assert dim.low is not None and dim.high is not None
            distributions[key] = optuna.distributions.FloatDistribution(
                dim.low, dim.high, log=dim.type == "loguniform"
            )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
    for _, row in data.iterrows():
        params = {k: _native(row[CONFIG_PREFIX + k]) for k in varied}
        params = {k: v for k, v in params.items() if v is not None}
        study.add_trial(
            optuna.trial.create_trial(
                params=params,
                distributions={k: distributions[k] for k in params},
                value=float(row[metric]),
            )
        )
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    importances = optuna.importance.get_param_importances(study, evaluator=evaluator)
    return {k: float(v) for k, v in importances.items()}


def _native(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value.item() if hasattr(value, "item") else value


def plot_param_importance(importances: dict[str, float], path: Path) -> Path:
    keys = list(importances)[::-1]
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(keys) + 1.5))
    ax.barh(keys, [importances[k] for k in keys], color="tab:green")
    ax.set_xlabel("fANOVA importance (share of the metric's variance)")
    ax.set_title("Parameter importance")
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)


def plot_search(
    frame: pd.DataFrame,
    space: dict[str, SearchDimension],
    metric: str,
    mode: str,
    output_dir: Path,
    progress: SearchProgress | None = None,
    epoch_budget: int | None = None,
) -> list[str]:
    """Every plot of a finished search, written into ``output_dir``; their paths. With the
    search's ``progress`` (every epoch report), also the best metric against compute."""
    paths = [
        plot_metric_by_trial(frame, metric, mode, output_dir / "metric_by_trial.png"),
        plot_params_vs_metric(frame, space, metric, output_dir / "params_vs_metric.png"),
    ]
    if progress is not None and progress.trial_epochs:
        paths.append(
            plot_progress_by_trial_epochs(
                progress, output_dir / "progress_by_trial_epochs.png", epoch_budget
            )
        )
    importances = param_importances(frame, space, metric, mode)
    if importances:
        paths.append(plot_param_importance(importances, output_dir / "param_importance.png"))
    return [str(p) for p in paths]
