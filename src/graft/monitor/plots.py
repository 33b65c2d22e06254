"""The drift report's plots: PSI per feature, histograms reference vs snapshot, class shares,
the domain classifier's ROC curve."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from graft.io.plotting import save_figure
from graft.monitor.domain_classifier import DomainCheck
from graft.monitor.drift import ColumnDrift, LabelShift

DPI = 100
REFERENCE_COLOR, SNAPSHOT_COLOR = "tab:blue", "tab:orange"


def plot_psi(columns: list[ColumnDrift], threshold: float, path: Path) -> Path:
    """Horizontal PSI bars, the most drifted at the top, with the threshold as a line."""
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.35 * len(columns)))
    names = [c.name for c in columns][::-1]
    values = [c.psi for c in columns][::-1]
    colors = ["tab:red" if v > threshold else "tab:gray" for v in values]
    ax.barh(names, values, color=colors)
    ax.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:g}")
    ax.set_xlabel("PSI (train rows vs snapshot)")
    ax.set_title("Population stability index per feature")
    ax.legend(loc="lower right")
    fig.tight_layout()
    return save_figure(fig, path, dpi=DPI)


def _bin_labels(edges: list[float]) -> list[str]:
    if not edges:
        return ["all", "missing"]
    inner = [f"{low:.3g}..{high:.3g}" for low, high in pairwise(edges)]
    return [f"<={edges[0]:.3g}", *inner, f">{edges[-1]:.3g}", "missing"]


def plot_histograms(columns: list[ColumnDrift], path: Path) -> Path:
    """Reference and snapshot shares per reference bin, one panel per feature."""
    fig, axes = plt.subplots(len(columns), 1, figsize=(8, 2.6 * len(columns)), squeeze=False)
    for ax, column in zip(axes[:, 0], columns, strict=True):
        labels = _bin_labels(column.edges)
        position = np.arange(len(labels))
        ax.bar(
            position - 0.2, column.reference_shares, 0.4, label="train rows", color=REFERENCE_COLOR
        )
        ax.bar(position + 0.2, column.snapshot_shares, 0.4, label="snapshot", color=SNAPSHOT_COLOR)
        ax.set_xticks(position, labels, rotation=30, ha="right", fontsize=7)
        ax.set_ylabel("share of rows")
        ax.set_title(f"{column.name} (PSI {column.psi:.3f}, KS {column.ks_statistic:.3f})")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path, dpi=DPI)


def plot_labels(labels: LabelShift, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(max(5.0, 0.5 * len(labels.classes) + 2), 3.5))
    position = np.arange(len(labels.classes))
    ax.bar(position - 0.2, labels.reference_shares, 0.4, label="train rows", color=REFERENCE_COLOR)
    ax.bar(position + 0.2, labels.snapshot_shares, 0.4, label="snapshot", color=SNAPSHOT_COLOR)
    ax.set_xticks(position, labels.classes, rotation=45, ha="right")
    ax.set_ylabel("share of rows")
    ax.set_title(
        f"Class shares (PSI {labels.psi:.3f}, total variation {labels.total_variation:.3f})"
    )
    ax.legend()
    fig.tight_layout()
    return save_figure(fig, path, dpi=DPI)


def plot_domain_roc(domain: DomainCheck, threshold: float, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot(domain.false_positive_rate, domain.true_positive_rate, label=f"AUC {domain.auc:.3f}")
    ax.plot([0, 1], [0, 1], linestyle="--", color="gray", label="indistinguishable (0.5)")
    ax.set_xlabel("false positive rate: train rows taken for snapshot rows")
    ax.set_ylabel("true positive rate: snapshot rows recognised")
    ax.set_title(f"Domain classifier (threshold {threshold:g})")
    ax.legend(loc="lower right")
    fig.tight_layout()
    return save_figure(fig, path, dpi=DPI)
