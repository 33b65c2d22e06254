"""What a fit is asked to do (:class:`FitRequest`, the workers' input) and how the driver
runs it (:class:`FitRun`, Ray Train's settings; it never leaves the driver).

The request is one pydantic object. It reaches the Ray Train workers as its
``model_dump_json`` and is rebuilt there with ``model_validate_json``; the stage's training
block is in ``pretrain`` or in ``finetune``, so the worker reads its class from the field it
is in, not from the keys it has.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator

from graft.config import FinetuneConfig, PhaseConfig, TrainConfig, WorkerResources
from graft.config.data import ImageAugmentConfig
from graft.errors import ConfigError
from graft.io.ray_runtime import TrainStorage


class StreamInputs(BaseModel):
    """A streamed dataset (``data.loader: streaming``): ``train_path`` and ``val_path`` of the
    request are split manifests, which the driver turns into Ray Data datasets
    (graft.train.stream_data) and each worker reads its shard of."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input_shape: list[int]  # C x H x W every image is decoded to; [F] for a table's rows
    rows: dict[str, int]  # examples per split, train and val
    shuffle_buffer: int  # data.streaming.shuffle_buffer
    max_pixels: int  # data.image.max_pixels, checked again as each file is decoded
    cache_decoded: Literal["auto", "never", "always"] = "auto"  # data.streaming.cache_decoded
    # a Parquet source's feature columns and label column (None for an image folder)
    features: list[str] | None = None
    label_column: str | None = None


class FitRequest(BaseModel):
    """Everything a worker needs to train: data, architecture, settings, phases, seed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    train_path: str  # a split's .npz, or its manifest when ``stream`` is set
    val_path: str
    stream: StreamInputs | None = None
    spec_json: str  # graft.nn.models.ModelSpec, as its own JSON (the checkpoint keeps it so)
    pretrain: TrainConfig | None = None
    finetune: FinetuneConfig | None = None
    phases: list[PhaseConfig]
    seed: int
    # data.image.augment for an image dataset when it is on (graft.train.augment); else None
    augment: ImageAugmentConfig | None = None
    init_weights_path: str | None = None
    tracking_uri: str | None = None
    mlflow_run_id: str | None = None
    # test-only fault injection: the first attempt's workers fail when this epoch starts
    # (graft.train.fault_injection); resume tests set it, nothing else does
    fail_at_epoch: int | None = None

    @model_validator(mode="after")
    def _one_training_block(self) -> FitRequest:
        if (self.pretrain is None) == (self.finetune is None):
            raise ValueError("a fit request carries exactly one of pretrain or finetune")
        if isinstance(self.pretrain, FinetuneConfig):
            raise ValueError("a finetune block goes in FitRequest.finetune, not pretrain")
        if self.stream is not None and self.train_config.budget.mode == "virtual_epochs":
            raise ValueError(
                "budget.mode=virtual_epochs resumes inside a pass over the data, which a "
                "stream cannot replay: use budget.mode=epochs with data.loader=streaming"
            )
        return self

    @property
    def train_config(self) -> TrainConfig:
        config = self.finetune if self.finetune is not None else self.pretrain
        assert config is not None  # _one_training_block
        return config

    def input_paths(self) -> list[str]:
        """The files every worker reads whole (a stream's manifests are read by Ray Data)."""
        splits = () if self.stream is not None else (self.train_path, self.val_path)
        return [p for p in (*splits, self.init_weights_path) if p]


@dataclass(frozen=True)
class ShippedInputs:
    """A request's input files (splits, initial weights) in Ray's object store.

    The paths are on the driver's machine. On a cluster of several nodes a worker on another
    node has its own filesystem, where they do not exist; every worker reads the object store
    instead, on any node, so one code path serves one machine and many."""

    files: Any  # the ObjectRef of {path: bytes}

    def open(self) -> dict[str, io.BytesIO]:
        """Each input path as a file this worker can read (fetched once for all of them)."""
        import ray

        contents: dict[str, bytes] = ray.get(self.files)
        return {path: io.BytesIO(data) for path, data in contents.items()}


@dataclass(frozen=True)
class LocalInputs:
    """A request's input files read from this process's disk: a fit that trains here (a Tune
    trial in its own trainable), where the paths are this machine's."""

    paths: tuple[str, ...]

    def open(self) -> dict[str, io.BytesIO]:
        return {path: io.BytesIO(Path(path).read_bytes()) for path in self.paths}


def ship_inputs(request: FitRequest) -> ShippedInputs:
    import ray

    files = {path: Path(path).read_bytes() for path in request.input_paths()}
    return ShippedInputs(ray.put(files))


def phases_for(config: TrainConfig) -> list[PhaseConfig]:
    """The fit's phases; with virtual epochs a phase's ``epochs`` count virtual epochs."""
    virtual = config.budget.mode == "virtual_epochs"
    if isinstance(config, FinetuneConfig):
        phases = list(config.phases)
        total = sum(p.epochs for p in phases)
        if virtual and total != config.budget.num_checkpoints:
            raise ConfigError(
                f"finetune.budget.mode=virtual_epochs: the phases' epochs (virtual epochs) sum "
                f"to {total} but finetune.budget.num_checkpoints is "
                f"{config.budget.num_checkpoints}; make them equal"
            )
        return phases
    epochs = config.budget.num_checkpoints if virtual else config.epochs
    return [PhaseConfig(trainable="all", epochs=epochs)]


@dataclass(frozen=True)
class FitRun:
    """How the driver runs a fit on Ray Train: its name and storage (a rerun with the same
    name and storage resumes), the worker group, and where the final model is copied."""

    run_name: str
    output_dir: Path
    storage: TrainStorage
    num_workers: int
    resources: WorkerResources = field(default_factory=WorkerResources)
    max_failures: int = 0
    num_to_keep: int = 1
    # CPU taken off each worker's request (a Tune trial's own actor holds it)
    cpu_discount: float = 0.0
    callbacks: tuple[Any, ...] = ()

    @classmethod
    def for_stage(
        cls,
        config: TrainConfig,
        *,
        run_name: str,
        output_dir: Path,
        storage: TrainStorage,
        **changes: Any,
    ) -> FitRun:
        """The stage's settings (workers, resources, checkpoint policy) with ``changes``."""
        run = cls(
            run_name=run_name,
            output_dir=output_dir,
            storage=storage,
            num_workers=config.num_workers,
            resources=config.resources,
            max_failures=config.checkpoint.max_failures,
            num_to_keep=config.checkpoint.num_to_keep,
        )
        return replace(run, **changes)
