"""MC-dropout evaluation: accuracy and uncertainty of the averaged stochastic passes, and what
they cost in latency per sample count.

The passes come from :func:`graft.nn.mc_dropout.mc_predict`, which switches on only the dropout
modules: batch norm keeps normalizing with its running statistics and never updates them. The
draws are seeded inside a forked RNG, so evaluation is reproducible and the caller's global
torch RNG is left as it was.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from graft.nn.mc_dropout import DROPOUT_LAYERS, mc_predict

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SampleCountRow:
    samples: int
    latency_ms: float  # wall time of all passes over the whole split
    latency_ms_per_example: float
    accuracy: float  # of the mean over this many passes


@dataclass
class MCDropoutReport:
    samples: int
    seed: int
    dropout_layers: int  # 0: the passes are all identical, std is 0
    accuracy: float  # argmax of the mean probabilities over ``samples`` passes
    loss: float  # cross-entropy of the mean probabilities
    mean_std: float  # mean over examples of the std of the predicted class's probability
    mean_std_correct: float  # the same over correctly classified examples (nan if none)
    mean_std_wrong: float  # ... and over misclassified ones (nan if none)
    by_sample_count: list[SampleCountRow] = field(default_factory=list)

    @property
    def metrics(self) -> dict[str, float]:
        """Scalars for metrics.json and MLflow."""
        values = {
            "mc_dropout_accuracy": self.accuracy,
            "mc_dropout_loss": self.loss,
            "mc_dropout_mean_std": self.mean_std,
        }
        for name, value in (
            ("mc_dropout_mean_std_correct", self.mean_std_correct),
            ("mc_dropout_mean_std_wrong", self.mean_std_wrong),
        ):
            if not np.isnan(value):
                values[name] = value
        for row in self.by_sample_count:
            values[f"mc_dropout_latency_ms_{row.samples}"] = row.latency_ms
        return values


def _count_dropout(model: nn.Module) -> int:
    return sum(1 for module in model.modules() if isinstance(module, DROPOUT_LAYERS))


def _timed_predict(
    model: nn.Module, x: torch.Tensor, samples: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, float]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        start = time.perf_counter()
        mean, std = mc_predict(model, x, samples)
        elapsed = time.perf_counter() - start
    return mean, std, elapsed * 1000.0


def mc_dropout_evaluation(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    samples: int,
    seed: int,
    latency_sample_counts: list[int] | None = None,
) -> MCDropoutReport:
    """Evaluate ``model`` (logits out) on ``x``/``y`` with ``samples`` MC-dropout passes.

    ``latency_sample_counts`` (capped at ``samples``; ``samples`` is always included) are timed
    and scored too, each run seeded with ``seed``: the table shows how fast accuracy settles
    against what every extra pass costs.
    """
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    layers = _count_dropout(model)
    if layers == 0:
        log.warning(
            "MC dropout on a model without dropout layers: every pass is identical, the std is "
            "0; train with model.dropout.rate > 0 for an uncertainty estimate"
        )
    inputs = torch.from_numpy(np.asarray(x, dtype=np.float32))
    labels = np.asarray(y)
    counts = sorted({c for c in (latency_sample_counts or []) if c <= samples} | {samples})
    rows: list[SampleCountRow] = []
    mean = std = torch.empty(0)
    for count in counts:
        mean, std, latency = _timed_predict(model, inputs, count, seed)
        rows.append(
            SampleCountRow(
                samples=count,
                latency_ms=latency,
                latency_ms_per_example=latency / max(len(labels), 1),
                accuracy=float((mean.argmax(1).numpy() == labels).mean()),
            )
        )
    # ``mean``/``std`` are now those of the largest count, ``samples``.
    probabilities = mean.numpy().astype(np.float64)
    spread = std.numpy().astype(np.float64)
    predicted = probabilities.argmax(1)
    correct = predicted == labels
    predicted_std = spread[np.arange(len(labels)), predicted]
    true_probability = np.clip(probabilities[np.arange(len(labels)), labels], 1e-12, 1.0)
    return MCDropoutReport(
        samples=samples,
        seed=seed,
        dropout_layers=layers,
        accuracy=float(correct.mean()),
        loss=float(-np.log(true_probability).mean()),
        mean_std=float(predicted_std.mean()),
        mean_std_correct=float(predicted_std[correct].mean()) if correct.any() else float("nan"),
        mean_std_wrong=float(predicted_std[~correct].mean()) if (~correct).any() else float("nan"),
        by_sample_count=rows,
    )
