"""Plots people would rather look at than read: confusion, reliability, learning curves."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from graft.evaluate.calibration import Calibration
from graft.io.plotting import save_figure


def plot_confusion(confusion: list[list[int]], class_names: list[str], path: Path) -> Path:
    matrix = np.array(confusion)
    size = max(4.0, 0.6 * len(class_names) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    threshold = matrix.max() / 2 if matrix.size else 0
    for (row, col), value in np.ndenumerate(matrix):
        color = "white" if value > threshold else "black"
        ax.text(col, row, str(value), ha="center", va="center", color=color)
    ax.set_title("Confusion matrix (test split)")
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


def plot_reliability(result: Calibration, path: Path) -> Path:
    """Accuracy per confidence bin against the diagonal of perfect calibration."""
    lower = np.array([b.lower for b in result.bins])
    width = np.array([b.upper - b.lower for b in result.bins])
    counts = np.array([b.count for b in result.bins])
    accuracy = np.array([b.accuracy for b in result.bins])
    confidence = np.array([b.mean_confidence for b in result.bins])
    fig, (ax, count_ax) = plt.subplots(
        2, 1, figsize=(5, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    filled = counts > 0
    ax.bar(
        lower[filled],
        accuracy[filled],
        width=width[filled],
        align="edge",
        edgecolor="black",
        color="tab:blue",
        label="accuracy in bin",
    )
    centers = lower + width / 2
    ax.plot(
        centers[filled],
        confidence[filled],
        "o",
        color="tab:red",
        label="mean confidence in bin",
    )
    ax.plot([0, 1], [0, 1], linestyle="--", color="gray", label="perfectly calibrated")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title(f"Reliability diagram (test split), ECE = {result.ece:.4f}")
    ax.legend(loc="upper left")
    count_ax.bar(lower, counts, width=width, align="edge", edgecolor="black", color="lightgray")
    count_ax.set_xlabel("confidence of the predicted class")
    count_ax.set_ylabel("examples")
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


def plot_learning_curves(history: list[dict[str, float]], title: str, path: Path) -> Path:
    epochs = [h["epoch"] for h in history]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4))
    loss_ax.plot(epochs, [h["train_loss"] for h in history], label="train")
    loss_ax.plot(epochs, [h["val_loss"] for h in history], label="validation")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("loss")
    loss_ax.legend()
    acc_ax.plot(epochs, [h["train_accuracy"] for h in history], label="train")
    acc_ax.plot(epochs, [h["val_accuracy"] for h in history], label="validation")
    acc_ax.set_xlabel("epoch")
    acc_ax.set_ylabel("accuracy")
    acc_ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)
