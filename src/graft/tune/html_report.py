"""The tune stage as one self-contained HTML page: what was handed on and why, the best
parameters, every trial with its outcome, and the search's plots.

``graft.stages.tune`` writes it as ``report.html`` in the stage's output folder; MLflow keeps
it with the tune run and the KFP UI shows it as the tune task's ``report`` output.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from graft.io.html_page import embedded_png, escape, html_table, page_head

TUNE_REPORT_FILE = "report.html"
# trials.csv columns worth a glance, before the searched parameters (config/<key>)
TRIAL_COLUMNS = ("trial_id", "outcome", "epoch")


def render_tune_report(
    title: str,
    summary: Mapping[str, object],
    best_params: Mapping[str, Any],
    trials: Any = None,
    metric: str = "",
    space_keys: Iterable[str] = (),
    plots: Iterable[str | Path] = (),
) -> str:
    """``trials`` is the search's trials table (a pandas DataFrame), None when no search ran."""
    parts = [
        page_head(title),
        "<h2>Result</h2>",
        html_table("summary", ["", "value"], [[k, v] for k, v in summary.items()]),
    ]
    if best_params:
        parts += [
            "<h2>Best parameters</h2>",
            html_table("best-params", ["key", "value"], [[k, v] for k, v in best_params.items()]),
        ]
    if trials is not None and len(trials):
        searched = [f"config/{key}" for key in space_keys]
        columns = [c for c in (*TRIAL_COLUMNS, metric, *searched) if c and c in trials.columns]
        rows = [[_cell(value) for value in row] for row in trials[columns].itertuples(index=False)]
        parts += [
            f"<h2>Trials ({len(trials)})</h2>",
            html_table("trials", [c.removeprefix("config/") for c in columns], rows),
        ]
    for plot in plots:
        path = Path(plot)
        if path.is_file():
            parts += [
                f"<h3>{escape(path.stem.replace('_', ' '))}</h3>",
                embedded_png(path, path.stem),
            ]
    parts.append("</body></html>")
    return "".join(parts)


def write_tune_report(
    out: Path,
    title: str,
    summary: Mapping[str, object],
    best_params: Mapping[str, Any],
    trials: Any = None,
    metric: str = "",
    space_keys: Iterable[str] = (),
    plots: Iterable[str | Path] = (),
) -> Path:
    """Write :func:`render_tune_report`'s page into ``out/report.html``; return its path."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / TUNE_REPORT_FILE
    page = render_tune_report(title, summary, best_params, trials, metric, space_keys, plots)
    path.write_text(page, encoding="utf-8")
    return path


def _cell(value: Any) -> object:
    """A table cell: numpy scalars as Python numbers, NaN (a trial without it) as empty."""
    value = value.item() if hasattr(value, "item") else value
    return "" if isinstance(value, float) and value != value else value
