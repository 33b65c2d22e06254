"""The ``export`` block: formats, variants and the registry."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from graft.config.base import Strict


class ExportConfig(Strict):
    model_name: str = Field(default="graft-classifier", pattern=r"^[A-Za-z0-9][\w.-]*$")
    promotion_lock_timeout_s: float = Field(
        default=600.0,
        gt=0.0,
        description="a place in the champion's promotion lock not renewed for this long is a "
        "crashed export's, and is removed (graft.export.promotion)",
    )
    onnx_opset: int = Field(default=18, ge=13, description="pinned ONNX opset of every graph")
    parity_atol: float = Field(
        default=1e-4, gt=0.0, description="largest fp32 logit difference TorchScript/ONNX may show"
    )
    fold_batch_norm: bool = Field(
        default=True,
        description="fold each BN placed right after a Linear/Conv into it in the served files",
    )
    fold_atol: float = Field(
        default=1e-5,
        gt=0.0,
        description="largest logit difference BN folding may introduce, per unit of the "
        "largest |logit| (when above 1)",
    )
    int8: bool = Field(default=True, description="dynamic int8 quantized TorchScript variant")
    fp16: bool = Field(default=True, description="float16 ONNX variant (GPU serving)")
    latency_batch_sizes: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=lambda: [1, 64], description="batch sizes of the latency figures"
    )
    latency_runs: int = Field(
        default=20, ge=1, description="timed calls per latency figure (the median is reported)"
    )
    intended_use: str = Field(
        default="Classifying inputs drawn from the same distribution as the training data's "
        "target task; a decision aid whose errors a person can catch, not an unattended "
        "decision maker.",
        description="model card: what the model is for",
    )
    limitations: list[str] = Field(
        default_factory=lambda: [
            "Measured on one held-out test split of the training data; accuracy on data "
            "from another source, period or population is unknown.",
            "Probabilities are only as calibrated as the reported ECE says.",
            "The quantized and float16 variants trade the reported accuracy delta for speed "
            "and size.",
        ],
        description="model card: known limits",
    )
