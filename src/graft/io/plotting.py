"""Headless matplotlib for every plot the library writes, and the one way a figure reaches disk.

Importing this module selects the Agg backend, so plot modules import it before drawing.
Modules that keep matplotlib off their import path (training, reports) import it inside the
plotting function instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")  # headless: pods and CI have no display
import matplotlib.pyplot as plt

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def save_figure(fig: Figure, path: str | Path, dpi: int) -> Path:
    """Write ``fig`` as ``path`` (its folder created if missing) and close it, so a long
    search or evaluation does not keep every figure it drew in memory; the path written."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return out
