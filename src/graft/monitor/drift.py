"""Column and label drift: the population stability index (PSI) over the reference's quantile
bins, the two-sample Kolmogorov-Smirnov test against the reference's sample, and the shift of
the class shares (PSI and total variation distance)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import ks_2samp

from graft.data.drift_view import DriftView
from graft.data.reference import ReferenceStatistics, bin_counts

# an empty bin's share: without a floor one empty bin makes the PSI infinite
PSI_FLOOR = 1e-4


@dataclass(frozen=True)
class ColumnDrift:
    name: str
    psi: float
    ks_statistic: float  # largest gap between the two empirical CDFs (NaN: no values)
    ks_p_value: float
    edges: list[float]  # the reference's inner bin edges
    reference_shares: list[float]  # per bin, missing values last
    snapshot_shares: list[float]


@dataclass(frozen=True)
class LabelShift:
    classes: list[str]  # every class of either side, in the reference's order first
    reference_shares: list[float]
    snapshot_shares: list[float]
    psi: float
    total_variation: float  # half the summed absolute share differences, 0..1
    unseen: list[str]  # classes the train rows never had


def psi(reference: np.ndarray, current: np.ndarray) -> float:
    """Sum over bins of (current - reference) * ln(current / reference), shares floored at
    PSI_FLOOR; 0 for identical shares, and symmetric in its arguments."""
    p = np.maximum(np.asarray(reference, dtype=np.float64), PSI_FLOOR)
    q = np.maximum(np.asarray(current, dtype=np.float64), PSI_FLOOR)
    return float(np.sum((q - p) * np.log(q / p)))


def _shares(counts: np.ndarray) -> np.ndarray:
    return counts / max(1, int(counts.sum()))


def _ks(reference: np.ndarray, current: np.ndarray) -> tuple[float, float]:
    a, b = reference[np.isfinite(reference)], current[np.isfinite(current)]
    if len(a) == 0 or len(b) == 0:
        return float("nan"), float("nan")
    result = ks_2samp(a, b)
    return float(result.statistic), float(result.pvalue)


def column_drift(reference: ReferenceStatistics, view: DriftView) -> list[ColumnDrift]:
    """One figure set per compared column, in the reference's column order."""
    found = []
    for column, histogram in enumerate(reference.histograms):
        values = view.values[:, column]
        edges = np.asarray(histogram.edges, dtype=np.float64)
        current = _shares(bin_counts(values, edges))
        statistic, p_value = _ks(reference.sample[:, column], values)
        found.append(
            ColumnDrift(
                histogram.name,
                psi(np.asarray(histogram.shares), current),
                statistic,
                p_value,
                histogram.edges,
                histogram.shares,
                current.tolist(),
            )
        )
    return found


def label_shift(reference_counts: dict[str, int], labels: list[str]) -> LabelShift:
    """The class shares of the train rows against the snapshot's ``labels`` (class names)."""
    names, counts = np.unique(np.asarray(labels, dtype=str), return_counts=True)
    current_counts = dict(zip(names.tolist(), counts.tolist(), strict=True))
    unseen = sorted(set(current_counts) - set(reference_counts))
    classes = [*reference_counts, *unseen]
    p = _shares(np.array([reference_counts.get(c, 0) for c in classes], dtype=np.float64))
    q = _shares(np.array([current_counts.get(c, 0) for c in classes], dtype=np.float64))
    return LabelShift(
        classes=classes,
        reference_shares=p.tolist(),
        snapshot_shares=q.tolist(),
        psi=psi(p, q),
        total_variation=float(0.5 * np.abs(p - q).sum()),
        unseen=unseen,
    )
