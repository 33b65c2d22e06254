"""Served models take raw rows: the NaN fill data-prep applied is part of the exported graph.

data-prep stores tabular features already filled (:func:`graft.data.preprocessing.
apply_missing_fill`: NaN -> train median, plus a 0/1 column per column that had gaps in train),
so the trained network expects the filled width. A client sends raw rows with NaNs; the
export stage wraps the network in :class:`RawInputModel` so TorchScript, ONNX and the
registered MLflow model repeat the fill themselves. Training and checkpoints never see the
wrapper: it is added at export only, and the champion is loaded as the plain network from
the weights export logs beside it (graft.train.champion). The wrapper's modules live in
graft.data.raw_input_model, below training.
"""

from __future__ import annotations

import numpy as np

from graft.data.preprocessing import MissingValueFill


def raw_rows(x_filled: np.ndarray, fill: MissingValueFill | None) -> np.ndarray:
    """Rows as a client would send them, rebuilt from stored (filled) rows: the indicator
    columns are dropped and a 1 in one puts the NaN back in its column.

    Exact for every column with an indicator; a column without one had no gap in train, and a
    gap there in val/test was filled with the median, which the served model maps to the same
    value, so the served outputs on these rows equal the network's on the stored rows.
    """
    if fill is None:
        return x_filled
    width = len(fill.medians)
    raw = x_filled[:, :width].copy()
    for position, column in enumerate(fill.indicator_columns):
        raw[x_filled[:, width + position] == 1, column] = np.nan
    return raw
