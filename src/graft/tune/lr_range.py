"""The tune stage's optional LR-finder pre-step: one LR sweep narrows the LR search range.

The sweep (:func:`graft.train.stage_lr.sweep_stage`, in process) runs on exactly the model a
trial starts from, with the first finetune phase's trainable layers, and the phase's
``lr_scale`` is undone so the narrowed range is in units of ``finetune.optimizer.lr``, the key
the search samples. The window is centred on the finder's
suggestion (an order of magnitude below the loss minimum) and clipped to the configured
range: the finder removes LRs, it never adds any the user excluded. When the suggestion falls
outside the configured range the search keeps that range, with a warning.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from graft.config import LR_SEARCH_KEY, GraftConfig, with_overrides
from graft.train.lr_finder import plot_lr_finder
from graft.train.stage_lr import sweep_stage

log = logging.getLogger(__name__)


@dataclass
class NarrowedLRRange:
    configured_low: float
    configured_high: float
    low: float
    high: float
    suggested_lr: float  # in units of finetune.optimizer.lr (the phase's lr_scale undone)
    best_lr: float
    narrowed: bool  # False: the suggestion fell outside the configured range, which is kept
    plot: str

    def metrics(self) -> dict[str, float]:
        return {
            "lr_finder_suggested_lr": self.suggested_lr,
            "lr_finder_best_lr": self.best_lr,
            "lr_search_low": self.low,
            "lr_search_high": self.high,
        }


def narrowed_window(
    suggested: float, window_decades: float, low: float, high: float
) -> tuple[float, float, bool]:
    """``window_decades`` around ``suggested`` (log scale), clipped to ``[low, high]``;
    the configured range itself (and False) when the two do not overlap."""
    half = 10 ** (window_decades / 2)
    window_low, window_high = max(low, suggested / half), min(high, suggested * half)
    if window_low >= window_high:
        return low, high, False
    return window_low, window_high, True


def narrow_lr_range(
    config: GraftConfig, dataset_dir: str, pretrained_dir: str, output_dir: Path
) -> tuple[GraftConfig, NarrowedLRRange]:
    """Run the sweep; return the config whose LR dimension is narrowed, and what was done."""
    output_dir.mkdir(parents=True, exist_ok=True)
    settings = config.tune.lr_finder
    sweep = sweep_stage(
        config,
        "transfer-finetune",
        dataset_dir,
        output_dir / "scratch",
        pretrained_dir,
        min_lr=settings.min_lr,
        max_lr=settings.max_lr,
        num_steps=settings.num_steps,
    )
    dimension = config.tune.space[LR_SEARCH_KEY]
    assert dimension.low is not None and dimension.high is not None  # loguniform: validated
    suggested, best = sweep.suggested_lr, sweep.best_lr
    low, high, narrowed = narrowed_window(
        suggested, config.tune.lr_finder.window_decades, dimension.low, dimension.high
    )
    if not narrowed:
        log.warning(
            "LR finder suggests lr %.3g, outside the configured search range [%.3g, %.3g]; "
            "searching the configured range",
            suggested,
            dimension.low,
            dimension.high,
        )
    plot = plot_lr_finder(sweep.result, output_dir / "lr_finder.png")
    outcome = NarrowedLRRange(
        configured_low=dimension.low,
        configured_high=dimension.high,
        low=low,
        high=high,
        suggested_lr=suggested,
        best_lr=best,
        narrowed=narrowed,
        plot=str(plot),
    )
    space = {key: dim.model_dump(mode="json") for key, dim in config.tune.space.items()}
    space[LR_SEARCH_KEY] |= {"low": low, "high": high}
    log.info(
        "LR finder: search finetune.optimizer.lr in [%.3g, %.3g] (configured [%.3g, %.3g])",
        low,
        high,
        dimension.low,
        dimension.high,
    )
    (output_dir / "lr_range.json").write_text(json.dumps(asdict(outcome), indent=2))
    return with_overrides(config, {"tune.space": space}), outcome
