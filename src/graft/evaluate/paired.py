"""Paired tests of two classifiers scored on the same test rows: is a gap more than noise?

Two models scored on the same rows are compared row by row: only the rows where exactly one
of them is right tell them apart. Two tests, both on per-row correctness:

- McNemar's exact test: under "equally good", each of the ``n`` discordant rows is equally
  likely to favour either model, so the count favouring A is Binomial(n, 1/2); the two-sided
  p-value is twice the smaller tail (capped at 1). Its p-value is the one the gate reads.
- A paired bootstrap of the accuracy difference: resample the rows (the same rows for both
  models, seeded) for the difference's percentile interval, and a bootstrap p-value from the
  resampled differences shifted to the null of no difference.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

# rows x resamples drawn at once: bounds the bootstrap's memory on a large test split
_BOOTSTRAP_CHUNK = 4_000_000


@dataclass(frozen=True)
class PairedComparison:
    """Model A against model B on the same ``rows``; ``difference`` is A's accuracy minus B's."""

    rows: int
    accuracy_a: float
    accuracy_b: float
    difference: float
    ci_low: float  # the difference's percentile interval at 1 - alpha
    ci_high: float
    p_value: float  # McNemar's exact test, two-sided
    bootstrap_p_value: float
    only_a_correct: int  # discordant rows A gets right and B wrong
    only_b_correct: int
    alpha: float
    resamples: int
    seed: int

    @property
    def significant(self) -> bool:
        """The accuracies differ beyond noise at ``alpha`` (either direction)."""
        return self.p_value < self.alpha

    @property
    def a_better(self) -> bool:
        """A beats B beyond noise."""
        return self.significant and self.difference > 0

    @property
    def outcome(self) -> str:
        """A's side of the comparison in three words (a report's verdict column)."""
        if self.a_better:
            return "better beyond noise"
        return "worse beyond noise" if self.significant else "within noise"

    @property
    def interval_text(self) -> str:
        """``+0.0009 [-0.0040, +0.0060], p=0.71``: the figures a verdict quotes."""
        return (
            f"{self.difference:+.4f} [{self.ci_low:+.4f}, {self.ci_high:+.4f}], "
            f"{format_p_value(self.p_value)}"
        )

    def verdict(self, other: str) -> str:
        """A plain sentence on model A against ``other`` (e.g. "the linear baseline")."""
        if self.a_better:
            words = f"better than {other} beyond noise"
        elif self.significant:
            words = f"worse than {other} beyond noise"
        else:
            words = f"no better than {other} within noise"
        return f"{words}: {self.interval_text} ({self.rows:,} paired test rows)"


def comparison_metrics(comparisons: Mapping[str, PairedComparison]) -> dict[str, float]:
    """Scalar metrics (metrics.json, MLflow, the KFP UI) of each named comparison:
    ``vs_<name>_difference``, ``_ci_low``, ``_ci_high`` and ``_p_value`` (McNemar's)."""
    values: dict[str, float] = {}
    for name, test in comparisons.items():
        values[f"vs_{name}_difference"] = test.difference
        values[f"vs_{name}_ci_low"] = test.ci_low
        values[f"vs_{name}_ci_high"] = test.ci_high
        values[f"vs_{name}_p_value"] = test.p_value
    return values


def format_p_value(p: float) -> str:
    return "p<0.0001" if p < 1e-4 else f"p={p:.2g}"


def mcnemar_exact_p(only_a_correct: int, only_b_correct: int) -> float:
    """Two-sided exact McNemar p-value: ``2 * P(X <= min(b, c))``, X ~ Binomial(b + c, 1/2),
    capped at 1 (1 when there is no discordant row).

    Summed from the largest term down as ratios (each <= 1) of that term, taken in logs: no
    overflow at any row count, and only a p-value below about 1e-308 comes out as 0."""
    if only_a_correct < 0 or only_b_correct < 0:
        raise ValueError("discordant counts must be >= 0")
    n, k = only_a_correct + only_b_correct, min(only_a_correct, only_b_correct)
    if n == 0 or 2 * k >= n:
        return 1.0
    log_top = math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) - n * math.log(2)
    # P(X=j-1) / P(X=j) = j / (n - j + 1), for j = k, k-1, ..., 1
    steps = np.arange(k, 0, -1, dtype=np.float64)
    ratios = np.cumprod(steps / (n - steps + 1))
    tail = math.exp(log_top) * (1.0 + float(ratios.sum()))
    return min(1.0, 2.0 * tail)


def paired_comparison(
    a_correct: np.ndarray,
    b_correct: np.ndarray,
    *,
    alpha: float = 0.05,
    resamples: int = 2000,
    seed: int = 0,
) -> PairedComparison:
    """McNemar's exact test and a seeded paired bootstrap of A's accuracy minus B's.

    ``a_correct`` and ``b_correct`` say, per test row, whether each model is right; row ``i``
    of both must be the same test row."""
    a, b = _correctness(a_correct), _correctness(b_correct)
    if a.shape != b.shape:
        raise ValueError(f"per-row correctness of different lengths: {a.shape} vs {b.shape}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    rows = len(a)
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    low, high, bootstrap_p = _bootstrap(a, b, alpha, resamples, seed)
    return PairedComparison(
        rows=rows,
        accuracy_a=float(a.mean()),
        accuracy_b=float(b.mean()),
        difference=(only_a - only_b) / rows,
        ci_low=low,
        ci_high=high,
        p_value=mcnemar_exact_p(only_a, only_b),
        bootstrap_p_value=bootstrap_p,
        only_a_correct=only_a,
        only_b_correct=only_b,
        alpha=alpha,
        resamples=resamples,
        seed=seed,
    )


def _correctness(values: np.ndarray) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1 or len(array) == 0:
        raise ValueError(f"per-row correctness must be a non-empty 1-D array, got {array.shape}")
    return array.astype(bool)


def _bootstrap(
    a: np.ndarray, b: np.ndarray, alpha: float, resamples: int, seed: int
) -> tuple[float, float, float]:
    """The difference's percentile interval and the two-sided bootstrap p-value.

    Every resample draws rows with replacement, the same rows for both models, so swapping A
    and B negates each resampled difference exactly. The p-value counts resampled sums as far
    from the observed one as the observed one is from 0 (the null shifted onto the data),
    with the usual +1 of a Monte Carlo p-value; integer sums keep the count exact."""
    per_row = a.astype(np.int64) - b.astype(np.int64)  # +1, 0 or -1
    rows = len(per_row)
    observed = int(per_row.sum())
    rng = np.random.default_rng(seed)
    chunk = max(1, _BOOTSTRAP_CHUNK // rows)
    sums = np.concatenate(
        [
            per_row[rng.integers(0, rows, size=(min(chunk, resamples - start), rows))].sum(axis=1)
            for start in range(0, resamples, chunk)
        ]
    )
    low, high = np.quantile(sums / rows, [alpha / 2, 1 - alpha / 2])
    extreme = int(np.sum(np.abs(sums - observed) >= abs(observed)))
    return float(low), float(high), (1 + extreme) / (1 + resamples)
