"""The columns drift is measured on: a table's own features, or an image's summary figures.

A table's features are compared one by one. An image's pixels are not: 784 per-pixel tests of
Fashion-MNIST would flag noise and say nothing a person can act on. An image is summarised by
its mean brightness, its contrast (the standard deviation of its pixels) and its edge energy
(the mean absolute difference between neighbouring pixels), compared one by one, plus a coarse
grid of mean pixel values that only the domain classifier sees, so that a change in *where*
the ink is shows even when the three summaries stay put.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IMAGE_SUMMARIES = ("brightness", "contrast", "edge_energy")
GRID_CELLS = 4  # per side: a 4 x 4 grid of mean pixel values per channel
CHUNK_ROWS = 4096


@dataclass(frozen=True)
class DriftView:
    values: np.ndarray  # rows x columns, float64; NaN where a table has a gap
    names: list[str]  # one per column
    compared: int  # the first ``compared`` columns are tested one by one; the rest only
    # feed the domain classifier

    @property
    def compared_names(self) -> list[str]:
        return self.names[: self.compared]


def drift_view(x: np.ndarray, kind: str, feature_names: list[str] | None = None) -> DriftView:
    """``x`` (a table N x F, or images N x C x H x W) as the columns the monitor compares."""
    if kind == "image":
        return _image_view(x)
    table = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    names = list(feature_names) if feature_names else [f"x{i}" for i in range(table.shape[1])]
    return DriftView(table, names, compared=table.shape[1])


def image_column_names(shape: tuple[int, ...]) -> list[str]:
    """The drift columns of an image of ``shape`` (C x H x W)."""
    return [*IMAGE_SUMMARIES, *_grid_names(*shape)]


def image_view(values: np.ndarray, shape: tuple[int, ...]) -> DriftView:
    """Drift columns of images of ``shape`` (C x H x W), computed apart (a pass over the
    files, graft.data.streaming_scan), as a view."""
    return DriftView(values, image_column_names(shape), compared=len(IMAGE_SUMMARIES))


def _image_view(x: np.ndarray) -> DriftView:
    # in chunks: 60,000 Fashion-MNIST images as float64 would take 380 MB, their
    # differences as much again
    parts = [
        _image_columns(x[start : start + CHUNK_ROWS]) for start in range(0, len(x), CHUNK_ROWS)
    ]
    names = image_column_names(x.shape[1:])
    return image_view(np.concatenate(parts) if parts else np.empty((0, len(names))), x.shape[1:])


def _image_columns(chunk: np.ndarray) -> np.ndarray:
    images = np.asarray(chunk, dtype=np.float64)
    flat = images.reshape(len(images), -1)
    edges = np.zeros(len(images))
    if images.shape[-1] > 1:
        edges += np.abs(np.diff(images, axis=-1)).mean(axis=(1, 2, 3))
    if images.shape[-2] > 1:
        edges += np.abs(np.diff(images, axis=-2)).mean(axis=(1, 2, 3))
    return np.column_stack([flat.mean(axis=1), flat.std(axis=1), edges, _grid_means(images)])


def _grid_blocks(size: int) -> list[np.ndarray]:
    return np.array_split(np.arange(size), min(GRID_CELLS, size))


def _grid_names(channels: int, height: int, width: int) -> list[str]:
    cells = range(len(_grid_blocks(height))), range(len(_grid_blocks(width)))
    return [f"grid_c{c}_{i}{j}" for c in range(channels) for i in cells[0] for j in cells[1]]


def _grid_means(images: np.ndarray) -> np.ndarray:
    """Mean pixel value of each cell of a GRID_CELLS x GRID_CELLS grid, per channel, in the
    order of :func:`_grid_names`."""
    channels, height, width = images.shape[1:]
    cells = [
        images[:, channel, row[0] : row[-1] + 1, col[0] : col[-1] + 1].mean(axis=(1, 2))
        for channel in range(channels)
        for row in _grid_blocks(height)
        for col in _grid_blocks(width)
    ]
    return np.column_stack(cells)
