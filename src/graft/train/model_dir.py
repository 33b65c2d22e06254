"""A trained model's folder: the weights, the architecture and the fit's history, as a
checkpoint and the stages' outputs hold them (a checkpoint also holds the full training
state, which a restarted fit resumes from)."""

from __future__ import annotations

import json
import pickle
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from graft.errors import TrainingError
from graft.nn.models import GraftNet, ModelSpec, build_model

MODEL_FILE = "model.pt"
SPEC_FILE = "spec.json"
STATE_FILE = "state.pt"
HISTORY_FILE = "history.json"


def save_model_dir(model: GraftNet, spec: ModelSpec, directory: str | Path) -> Path:
    """Write a model folder that :func:`load_checkpoint_model` reads back."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / MODEL_FILE)
    spec.save(out / SPEC_FILE)
    return out


def load_checkpoint_model(checkpoint_dir: str | Path) -> tuple[GraftNet, ModelSpec]:
    """The model a model folder holds, its weights unpickled as tensors only: the folder may
    come from storage others can write (a staged input, a checkpoint, the registry)."""
    directory = Path(checkpoint_dir)
    spec = ModelSpec.load(directory / SPEC_FILE)
    model = build_model(spec)
    path = directory / MODEL_FILE
    try:
        # map_location: a GPU worker saved CUDA tensors; evaluate/export run on CPU pods
        weights = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        raise TrainingError(
            f"refusing to load {path}: it holds more than tensors ({_refused_type(exc)}), and "
            "unpickling it could run code. Model folders hold tensors only: replace the file "
            "with one Graft wrote"
        ) from None
    model.load_state_dict(weights)
    return model, spec


def _refused_type(exc: pickle.UnpicklingError) -> str:
    # torch's message: advice, then the type it refused, then a link
    lines = [line.strip() for line in str(exc).splitlines()]
    return next((line for line in lines if "GLOBAL" in line.upper()), "a non-tensor type").rstrip(
        "."
    )


def load_training_state(checkpoint_dir: str | Path) -> dict[str, Any]:
    """A checkpoint's full training state (:func:`checkpoint_folder` wrote it), unpickling tensors
    and plain values only.

    A checkpoint sits on storage that other jobs can write (a shared volume, a bucket): a
    pickle there that named any other type could run code in every worker that resumes."""
    path = Path(checkpoint_dir) / STATE_FILE
    try:
        state: dict[str, Any] = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        raise TrainingError(
            f"refusing to resume from {path}: it holds more than tensors and plain values "
            f"({_refused_type(exc)}), and unpickling it could run code. Delete the checkpoint "
            "(or the run's storage folder) to start the fit afresh"
        ) from None
    return state


@contextmanager
def checkpoint_folder(payload: dict[str, Any]) -> Iterator[str]:
    """A temporary folder holding the checkpoint of ``payload`` (graft.train.loop_state's
    ``training_state``): the full state a resumed fit reads back and the model files a stage
    hands on; removed after the block (a report has copied it to storage by then)."""
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(payload, Path(tmp) / STATE_FILE)
        write_model_files(tmp, payload["model"], payload["spec_json"], payload["loop"]["history"])
        yield tmp


def write_model_files(
    directory: str | Path,
    weights: dict[str, torch.Tensor],
    spec_json: str,
    history: list[dict[str, float]],
) -> None:
    """The model folder's files (weights, architecture, history) in ``directory``."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(weights, out / MODEL_FILE)
    (out / SPEC_FILE).write_text(spec_json)
    (out / HISTORY_FILE).write_text(json.dumps(history))
