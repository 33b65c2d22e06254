"""The served model's input side: data-prep's NaN fill as torch modules.

data-prep stores tabular features already filled (:func:`graft.data.preprocessing.
apply_missing_fill`: NaN -> train median, plus a 0/1 column per column that had gaps in train),
so the trained network expects the filled width. A client sends raw rows with NaNs; the
export stage wraps the network in :class:`RawInputModel` so TorchScript, ONNX and the
registered MLflow model repeat the fill themselves (graft.export.raw_inputs). Training and
checkpoints never see the wrapper: it is added at export only (the warm start reads the
champion's plain network from the weights export logs beside it: graft.train.champion).
"""

from __future__ import annotations

import torch
from torch import nn

from graft.data.preprocessing import MissingValueFill


class MissingValueImputer(nn.Module):
    """``apply_missing_fill`` in torch: NaN -> the stored train median per column, then one
    0/1 column per indicator column appended in the stored order."""

    def __init__(self, fill: MissingValueFill) -> None:
        super().__init__()
        self.register_buffer("medians", torch.tensor(fill.medians, dtype=torch.float32))
        self.register_buffer(
            "indicator_columns", torch.tensor(fill.indicator_columns, dtype=torch.long)
        )
        # decided once: an empty index_select would put a zero-width op into the graphs
        self.has_indicators = bool(fill.indicator_columns)

    medians: torch.Tensor
    indicator_columns: torch.Tensor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        missing = torch.isnan(x)
        filled = torch.where(missing, self.medians.to(x.dtype), x)
        if not self.has_indicators:
            return filled
        indicators = missing.index_select(1, self.indicator_columns).to(x.dtype)
        return torch.cat([filled, indicators], dim=1)


class RawInputModel(nn.Module):
    """The served model: imputer, then the trained network."""

    def __init__(self, imputer: MissingValueImputer, network: nn.Module) -> None:
        super().__init__()
        self.imputer = imputer
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(self.imputer(x))


def with_missing_fill(network: nn.Module, fill: MissingValueFill | None) -> nn.Module:
    """``network`` taking raw rows: wrapped when data-prep fitted a fill, unchanged otherwise."""
    return network if fill is None else RawInputModel(MissingValueImputer(fill), network)
