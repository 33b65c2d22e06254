"""The tiny preset's pipeline compiled by KFP's compiler, as the tests of its IR read it."""

from __future__ import annotations

from pathlib import Path

import yaml
from kfp import compiler

from graft.config import load_config
from graft.kfp.pipeline import build_pipeline


def compile_tiny(tmp_path: Path, *overrides: str) -> tuple[dict, dict]:
    """The pipeline spec and the Kubernetes platform spec's executors."""
    config = load_config(preset="tiny", overrides=list(overrides))
    path = tmp_path / "pipeline.yaml"
    compiler.Compiler().compile(build_pipeline("registry.example/graft:test", config), str(path))
    spec, platform = yaml.safe_load_all(path.read_text())
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
