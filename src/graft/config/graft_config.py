"""``GraftConfig``: the whole run's configuration, one block per stage, checked as a whole."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, model_validator

from graft.config.base import Strict
from graft.config.cluster import ClusterConfig
from graft.config.data import DataConfig
from graft.config.evaluate import EvaluateConfig
from graft.config.export import ExportConfig
from graft.config.model import _SELF_NORMALIZING_FIX, ModelConfig
from graft.config.monitor import MonitorConfig
from graft.config.runtime import (
    EXTERNAL_FAMILIES,
    REMOTE_TRACKING_SCHEMES,
    TRACKING_URI_ENV,
    BackboneSource,
    RayConfig,
    TrackingConfig,
    tracking_uri_credentials_problem,
)
from graft.config.train import FinetuneConfig, TrainConfig
from graft.config.training_presets import TRAINING_PRESETS
from graft.config.tune import WIDTH_SEARCH_KEY, SearchDimension, TuneConfig
from graft.errors import ConfigError


class GraftConfig(Strict):
    name: str = "graft"
    seed: int = 42
    work_dir: str = Field(default="work", description="run outputs, Ray storage, local MLflow")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    pretrain: TrainConfig = Field(default_factory=TrainConfig)
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig)
    tune: TuneConfig = Field(default_factory=TuneConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    training_preset: str | None = Field(
        default=None,
        description="a recipe of the book's guideline tables applied by load_config under the "
        "user's keys: " + ", ".join(TRAINING_PRESETS),
    )

    @model_validator(mode="after")
    def _search_space_names_real_keys(self) -> GraftConfig:
        for key in self.tune.space:
            _check_dotted_key(self, key)
        return self

    @model_validator(mode="after")
    def _searched_widths_keep_the_backbone(self) -> GraftConfig:
        """Tune trials finetune the one pretrained backbone: a trial with another width
        could not load its weights (the resolution multiplier can vary: global pooling
        keeps every weight's shape)."""
        searched = self.tune.space.get(WIDTH_SEARCH_KEY)
        if not self.tune.enabled or searched is None:
            return self
        fixed = self.model.mobile.width_multiplier
        if searched.type != "choice" or set(searched.values or []) != {fixed}:
            raise ValueError(
                f"tune.space searches {WIDTH_SEARCH_KEY}, but every tune trial finetunes the "
                "one pretrained backbone, whose conv widths pretrain fixed at "
                f"{WIDTH_SEARCH_KEY}={fixed}: a trial with "
                "another width cannot load those weights. Drop the key from tune.space and "
                f"compare widths with one pipeline run each (--set {WIDTH_SEARCH_KEY}=0.5), "
                "or search model.mobile.resolution_multiplier, which keeps the weights"
            )
        return self

    @model_validator(mode="after")
    def _imported_backbones_fix_the_architecture(self) -> GraftConfig:
        """With an imported backbone the architecture is the imported one (hf: the Hugging
        Face config; graft: the registered model's model block), and every trial finetunes
        that one import: a searched ``model.*`` key would change nothing or ask for another
        backbone than the trials load. ``model.dropout.*`` has no weights and still applies
        (hf: before the new head; graft: in the registered model's blocks)."""
        if self.model.family not in EXTERNAL_FAMILIES or not self.tune.enabled:
            return self
        searched = sorted(
            key
            for key in self.tune.space
            if key.startswith("model.") and not key.startswith("model.dropout.")
        )
        if searched:
            raise ValueError(
                f"tune.space searches {', '.join(searched)}, but model.family="
                f"{self.model.family} imports its backbone ({self.model.pretrained}), which fixes "
                "the architecture (family, widths, blocks, activation, batch norm): no trial "
                "could build another. Drop those keys from tune.space (model.dropout.* may "
                "stay) and compare backbones with one pipeline run each "
                "(--set model.pretrained=...)"
            )
        return self

    @model_validator(mode="after")
    def _pbt_segments_fit_the_finetune(self) -> GraftConfig:
        if self.tune.scheduler != "pbt":
            return self
        epochs = sum(p.epochs for p in self.finetune.phases)
        interval = self.tune.pbt.perturbation_interval
        if interval >= epochs:
            raise ValueError(
                f"tune.pbt.perturbation_interval={interval} is not below the finetune's {epochs} "
                "epochs (the sum of finetune.phases): no trial would ever be perturbed; lower "
                "the interval or add epochs"
            )
        return self

    @model_validator(mode="after")
    def _training_recipe_is_consistent(self) -> GraftConfig:
        if self.training_preset is not None and self.training_preset not in TRAINING_PRESETS:
            raise ValueError(_unknown_training_preset(self.training_preset))
        # an imported backbone (hf, graft) skips pretrain: its objective is never trained
        if self.pretrain.objective == "autoencoder" and self.model.family not in EXTERNAL_FAMILIES:
            if self.model.family != "mlp":
                raise ValueError(
                    "pretrain.objective=autoencoder mirrors the dense backbone in its decoder: "
                    "it needs model.family=mlp"
                )
            if self.pretrain.early_stopping.monitor != "val_loss":
                raise ValueError(
                    "pretrain.objective=autoencoder has no accuracy to monitor: set "
                    "pretrain.early_stopping.monitor=val_loss (the reconstruction error)"
                )
        if self.model.activation.name == "selu":
            for stage, train in (("pretrain", self.pretrain), ("finetune", self.finetune)):
                reg = train.regularization
                if reg.l1 > 0 or reg.l2 > 0 or reg.max_norm is not None:
                    sparse = (
                        " (for a sparse model the book's exception 1 applies: "
                        "training_preset=default_shallow with L1)"
                        if reg.l1 > 0
                        else ""
                    )
                    raise ValueError(
                        f"model.activation.name=selu with {stage}.regularization (l1={reg.l1}, "
                        f"l2={reg.l2}, max_norm={reg.max_norm}) breaks self-normalization"
                        f"{sparse}; {_SELF_NORMALIZING_FIX}"
                    )
            searched = self.tune.space.get("model.dropout.rate")
            if (
                self.tune.enabled
                and self.model.dropout.kind == "standard"
                and searched is not None
                and _may_be_positive(searched)
            ):
                raise ValueError(
                    "model.activation.name=selu while tune.space searches model.dropout.rate "
                    "with standard dropout: those trials would break self-normalization; set "
                    "model.dropout.kind=alpha, drop the key from tune.space or set "
                    "tune.enabled=false"
                )
        return self

    # -- derived paths -------------------------------------------------------------------
    @property
    def work_path(self) -> Path:
        return Path(self.work_dir)

    def resolved_tracking_uri(self, environ: Mapping[str, str] | None = None) -> str:
        """tracking.tracking_uri, else MLFLOW_TRACKING_URI, else a SQLite file in work_dir.

        The environment is read where the stage runs, not where the config was written: on a
        cluster the pods get the server's address from their environment (the chart's NOTES
        tell users to export it), so a pipeline compiled elsewhere still logs there.
        """
        if self.tracking.tracking_uri:
            return self.tracking.tracking_uri
        from_env = (os.environ if environ is None else environ).get(TRACKING_URI_ENV, "")
        if from_env.strip():
            problem = tracking_uri_credentials_problem(from_env, TRACKING_URI_ENV)
            if problem:
                raise ConfigError(problem)
            return from_env.strip()
        return f"sqlite:///{(self.work_path / 'mlflow.db').resolve()}"

    def tracks_to_a_server(self, environ: Mapping[str, str] | None = None) -> bool:
        """Whether runs go to a tracking server rather than a file on this machine."""
        return self.resolved_tracking_uri(environ).startswith(REMOTE_TRACKING_SCHEMES)

    def s3_locations(self) -> list[str]:
        """The dotted keys of every ``s3://`` location this config names: the pods that run
        it need S3 keys."""
        found: list[str] = []

        def walk(node: Any, path: str) -> None:
            if isinstance(node, dict):
                for key, value in node.items():
                    walk(value, f"{path}.{key}" if path else str(key))
            elif isinstance(node, list):
                for index, value in enumerate(node):
                    walk(value, f"{path}[{index}]")
            elif isinstance(node, str) and node.startswith("s3://"):
                found.append(path)

        walk(self.model_dump(mode="json"), "")
        return found

    @property
    def backbone_source(self) -> BackboneSource:
        """Where transfer-finetune's backbone comes from: Graft's own pretrain stage, or an
        imported model (``model.family`` hf or graft, from ``model.pretrained``)."""
        return "import" if self.model.family in EXTERNAL_FAMILIES else "pretrain"

    def to_json(self) -> str:
        return self.model_dump_json()


def _may_be_positive(dimension: SearchDimension) -> bool:
    if dimension.type == "choice":
        return any(isinstance(v, int | float) and v > 0 for v in dimension.values or [])
    return (dimension.high or 0.0) > 0


def _unknown_training_preset(name: object) -> str:
    return f"unknown training_preset '{name}'; choose one of {', '.join(TRAINING_PRESETS)}"


def _check_dotted_key(config: BaseModel, key: str) -> None:
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, BaseModel) or part not in type(node).model_fields:
            raise ValueError(f"tune.space key '{key}' is not a config key ('{part}' unknown)")
        node = getattr(node, part)
