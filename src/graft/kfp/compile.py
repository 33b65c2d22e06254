"""Compile the pipeline IR and one reusable component spec per stage (generated files)."""

from __future__ import annotations

from pathlib import Path

from kfp import compiler

from graft.config import DEFAULT_IMAGE, DEFAULT_PRESET, GraftConfig, load_config
from graft.kfp.components import make_components
from graft.kfp.pipeline import build_pipeline

PIPELINE_FILE = "training.yaml"


def compile_all(
    pipelines_dir: Path,
    components_dir: Path,
    image: str = DEFAULT_IMAGE,
    config: GraftConfig | None = None,
    preset: str = DEFAULT_PRESET,
) -> list[Path]:
    """Write ``pipelines/training.yaml`` and ``components/<stage>.yaml``; return the paths.

    The pipeline's default ``config_json`` is ``config`` (preset ``preset`` if None), and
    ``preset`` the default of its ``preset`` parameter: the preset ``config`` came from.
    """
    pipelines_dir.mkdir(parents=True, exist_ok=True)
    components_dir.mkdir(parents=True, exist_ok=True)
    written = []
    pipeline_path = pipelines_dir / PIPELINE_FILE
    compiler.Compiler().compile(
        build_pipeline(image, config or load_config(preset=preset), preset), str(pipeline_path)
    )
    written.append(pipeline_path)
    for name, component in make_components(image).items():
        path = components_dir / f"{name}.yaml"
        compiler.Compiler().compile(component, str(path))
        written.append(path)
    return written
