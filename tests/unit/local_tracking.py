"""The tiny preset with its work and a SQLite MLflow store in a test's own folder."""

from __future__ import annotations

from pathlib import Path

from graft.config import GraftConfig, load_config


def tiny_config_tracked_in(tmp_path: Path, *overrides: str) -> GraftConfig:
    return load_config(
        preset="tiny",
        overrides=[
            f"work_dir={tmp_path / 'work'}",
            f"tracking.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
            "tracking.experiment_name=unit",
            *overrides,
        ],
    )
