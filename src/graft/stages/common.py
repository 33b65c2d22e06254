"""Helpers more than one stage uses: run names and scoring a saved model on rows."""

from __future__ import annotations

import numpy as np
import torch

from graft.data.prepare import load_split
from graft.train.model_dir import load_checkpoint_model


def run_name_key(parent_run_id: str) -> str:
    """The part of the pipeline's MLflow run id that names its Ray Train and Tune runs."""
    return parent_run_id[:12]


def predict(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    """Class probabilities of ``model`` (logits out) on ``x``, in eval mode."""
    model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(x.astype(np.float32)))
    return torch.softmax(logits, dim=1).numpy()


def accuracy(model: torch.nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    return float((predict(model, x).argmax(1) == y).mean())


def validation_accuracy(dataset_dir: str, model_dir: str) -> float:
    """Accuracy of a saved model on the target validation split (what tune compares)."""
    x_val, y_val = load_split(dataset_dir, "target", "val")
    model, _ = load_checkpoint_model(model_dir)
    return accuracy(model, x_val, y_val)
