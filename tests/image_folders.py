"""Image folders for the tests: sklearn's digits as PNGs, one named folder per class."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

NAMES = {0: "zero", 1: "one", 2: "two"}


def digits_folder(root: Path, per_class: int = 20, mode: str = "L") -> Path:
    """The first ``per_class`` sklearn digits of 0, 1 and 2 as 8 x 8 PNGs in named folders."""
    digits = load_digits()
    for label, name in NAMES.items():
        (root / name).mkdir(parents=True)
        rows = np.flatnonzero(digits.target == label)[:per_class]
        for row in rows:
            pixels = (digits.images[row] * 16).clip(0, 255).astype(np.uint8)
            Image.fromarray(pixels, "L").convert(mode).save(root / name / f"{row}.png")
    return root
