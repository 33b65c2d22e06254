"""Mixed precision for the training step: ``torch.autocast`` around the forward pass and the
loss, and a ``GradScaler`` for fp16 (whose small exponent range underflows small gradients).

The weights, the optimizer state, evaluation and export stay fp32: autocast only runs the
matmuls and convolutions in the lower precision. bf16 keeps fp32's exponent range, so it needs
no scaler and runs on CPU too; fp16 autocast is a CUDA feature.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch

from graft.config import Precision
from graft.errors import ConfigError

_DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_for(precision: Precision, device_type: str) -> AbstractContextManager[Any]:
    """The context the step's forward and loss run under (a no-op for fp32)."""
    if precision == "fp32":
        return nullcontext()
    if precision == "fp16" and device_type != "cuda":
        raise ConfigError(
            f"precision=fp16 on a {device_type} device: fp16 autocast needs CUDA; use "
            "precision=bf16 on CPU (pretrain.precision / finetune.precision), or train on a GPU"
        )
    return torch.autocast(device_type=device_type, dtype=_DTYPES[precision])


def grad_scaler_for(precision: Precision, device_type: str) -> torch.amp.GradScaler | None:
    """A loss scaler for fp16 on CUDA; None otherwise (fp32 and bf16 need none)."""
    if precision != "fp16" or device_type != "cuda":
        return None
    return torch.amp.GradScaler("cuda")
