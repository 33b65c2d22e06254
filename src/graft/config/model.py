"""The ``model`` block: architecture, activations, initialisation, batch norm, dropout."""

from __future__ import annotations

import logging
import re
from typing import Annotated, Literal

from pydantic import Field, model_validator

from graft.config.base import Strict
from graft.config.runtime import EXTERNAL_FAMILIES

config_logger = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- model

InitScheme = Literal[
    "auto",
    "glorot_uniform",
    "glorot_normal",
    "he_uniform",
    "he_normal",
    "he_avg_uniform",
    "lecun_uniform",
    "lecun_normal",
    "torch_default",
]
ActivationName = Literal[
    "relu",
    "leaky_relu",
    "rrelu",
    "prelu",
    "elu",
    "selu",
    "gelu",
    "gelu_tanh",
    "gelu_sigmoid",
    "silu",
    "swish",
    "mish",
    "tanh",
    "sigmoid",
]


class ActivationConfig(Strict):
    name: ActivationName = "relu"
    negative_slope: float = Field(default=0.2, description="leaky_relu slope (paper's best)")
    rrelu_lower: float = 1.0 / 8.0
    rrelu_upper: float = 1.0 / 3.0
    prelu_init: float = 0.25
    elu_alpha: float = 1.0
    swish_beta: float = 1.0
    swish_beta_trainable: bool = False


class BatchNormConfig(Strict):
    enabled: bool = False
    placement: Literal["before_activation", "after_activation"] = "before_activation"
    ema_decay: float = Field(
        default=0.99, gt=0.0, lt=1.0, description="Keras meaning: weight on the OLD average"
    )
    eps: float = Field(default=1e-3, gt=0.0)
    sync: bool = Field(default=True, description="SyncBatchNorm when training with >1 worker")


class DropoutConfig(Strict):
    kind: Literal["standard", "alpha"] = "standard"
    rate: float = Field(default=0.0, ge=0.0, lt=1.0, description="hidden-layer dropout")
    input_rate: float = Field(default=0.0, ge=0.0, lt=1.0, description="dropout on the input")


_SELF_NORMALIZING_FIX = (
    "the self-normalizing recipe is SELU + LeCun init + standardized inputs + a plain MLP, no "
    "batch norm, no L1/L2, no max-norm, alpha dropout only (training_preset=self_normalizing); "
    "otherwise use another activation (training_preset=default_shallow or default_deep)"
)


class MobileConfig(Strict):
    """The ``mobile`` family's two MobileNet multipliers (Howard et al., 2017)."""

    width_multiplier: float = Field(
        default=1.0,
        gt=0.0,
        le=4.0,
        description="scales model.conv_channels (rounded to a multiple of 8, at least 8)",
    )
    resolution_multiplier: float = Field(
        default=1.0,
        gt=0.0,
        le=4.0,
        description="the stem resizes inputs to this fraction of their height and width",
    )


# where a Hugging Face folder may come from: MLflow artifact URIs (downloaded through the
# tracking server) and s3:// prefixes; anything else with a scheme is refused
HF_MLFLOW_SCHEMES = ("runs:/", "models:/", "mlflow-artifacts:/")
_REGISTERED_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))$")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def registered_model_uri(uri: str) -> tuple[str, str | None, str | None] | None:
    """``(name, alias, version)`` of ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` (one of
    alias and version is None); None for any other string."""
    match = _REGISTERED_URI.match(uri)
    if match is None:
        return None
    return match["name"], match["alias"], match["version"]


def _hf_source_problem(uri: str) -> str | None:
    """Why ``uri`` cannot hold a Hugging Face folder, or None."""
    if uri.startswith(("s3://", *HF_MLFLOW_SCHEMES)):
        return None
    if uri.startswith("file://"):
        return f"model.pretrained={uri}: write the local folder as a plain path, without file://"
    if _SCHEME.match(uri):
        return (
            f"model.pretrained={uri}: model.family=hf reads a local folder, an s3:// prefix or "
            f"an MLflow artifact URI ({', '.join(HF_MLFLOW_SCHEMES)}); Graft never downloads "
            "from the Hugging Face Hub or the web: save the model with "
            "save_pretrained(DIR) (or `hf download NAME --local-dir DIR`) and point "
            "model.pretrained at DIR or at its copy under s3://"
        )
    return None


class ModelConfig(Strict):
    family: Literal["mlp", "cnn", "mobile", "hf", "graft"] = Field(
        default="mlp",
        description="mlp; cnn (conv blocks); mobile (depthwise-separable blocks, model.mobile); "
        "hf (a Hugging Face image model's pretrained backbone, model.pretrained); graft (the "
        "backbone of a model Graft registered, model.pretrained). hf and graft skip pretrain",
    )
    pretrained: str | None = Field(
        default=None,
        description="the backbone model.family=hf or graft imports instead of pretraining one. "
        "hf: a folder written by save_pretrained (config.json + model.safetensors; never "
        "pytorch_model.bin), as a local path, an s3:// prefix or an MLflow artifact URI "
        "(runs:/ID/PATH, models:/NAME/VERSION, mlflow-artifacts:/...); supported model_types: "
        "resnet, convnext, mobilenet_v2, vit. graft: models:/NAME@ALIAS or "
        "models:/NAME/VERSION of a model Graft's export registered (its architecture is kept)",
    )
    hidden_sizes: list[Annotated[int, Field(gt=0)]] = Field(default_factory=lambda: [300, 100])
    conv_channels: list[Annotated[int, Field(gt=0)]] = Field(
        default_factory=lambda: [32, 64], description="cnn, mobile: channels per conv block"
    )
    mobile: MobileConfig = Field(default_factory=MobileConfig)
    activation: ActivationConfig = Field(default_factory=ActivationConfig)
    init: InitScheme = "auto"
    batch_norm: BatchNormConfig = Field(default_factory=BatchNormConfig)
    dropout: DropoutConfig = Field(default_factory=DropoutConfig)

    @model_validator(mode="after")
    def _pretrained_matches_the_family(self) -> ModelConfig:
        source = self.pretrained
        if self.family in EXTERNAL_FAMILIES and not source:
            raise ValueError(
                f"model.family={self.family} imports its backbone: set model.pretrained ("
                + (
                    "a save_pretrained folder: a local path, s3:// prefix or MLflow artifact URI)"
                    if self.family == "hf"
                    else "models:/NAME@ALIAS or models:/NAME/VERSION of a registered model)"
                )
            )
        if source is None:
            return self
        if self.family not in EXTERNAL_FAMILIES:
            hint = (
                "model.family=graft (a model Graft registered) or model.family=hf (Hugging Face "
                "files registered in MLflow)"
                if source.startswith("models:/")
                else "model.family=hf"
            )
            raise ValueError(
                f"model.pretrained={source} with model.family={self.family}: only an imported "
                f"backbone reads model.pretrained; set {hint}, or remove model.pretrained to "
                f"pretrain the {self.family} backbone here"
            )
        if self.family == "graft" and registered_model_uri(source) is None:
            raise ValueError(
                f"model.pretrained={source}: model.family=graft imports a registered model; "
                "write models:/NAME@ALIAS (models:/graft-tiny@champion) or models:/NAME/VERSION"
            )
        problem = _hf_source_problem(source) if self.family == "hf" else None
        if problem:
            raise ValueError(problem)
        return self

    @model_validator(mode="after")
    def _self_normalizing_recipe_holds(self) -> ModelConfig:
        """SELU self-normalizes only under the book's recipe (T6); refuse what breaks it.

        Alpha dropout without SELU is allowed with a warning: it still regularizes (Keras
        accepts it), but it is built to preserve SELU's fixed point, and refusing it would make
        a search over ``model.activation.name`` fail for every non-SELU trial.
        """
        uses_dropout = self.dropout.rate > 0 or self.dropout.input_rate > 0
        if self.activation.name == "selu":
            if self.batch_norm.enabled:
                raise ValueError(
                    "model.activation.name=selu with model.batch_norm.enabled=true: batch norm "
                    f"breaks self-normalization; {_SELF_NORMALIZING_FIX}"
                )
            if uses_dropout and self.dropout.kind == "standard":
                raise ValueError(
                    "model.activation.name=selu with standard dropout (model.dropout.rate="
                    f"{self.dropout.rate}, input_rate={self.dropout.input_rate}) breaks "
                    f"self-normalization; set model.dropout.kind=alpha. {_SELF_NORMALIZING_FIX}"
                )
            if self.init not in ("auto", "lecun_normal", "lecun_uniform"):
                config_logger.warning(
                    "model.activation.name=selu with model.init=%s: SELU self-normalizes only "
                    "with LeCun init; use model.init=lecun_normal (or auto)",
                    self.init,
                )
        elif self.dropout.kind == "alpha" and uses_dropout:
            config_logger.warning(
                "model.dropout.kind=alpha with model.activation.name=%s: alpha dropout is built "
                "to keep SELU's mean and variance; with other activations use "
                "model.dropout.kind=standard",
                self.activation.name,
            )
        return self
