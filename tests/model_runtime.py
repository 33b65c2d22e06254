"""A Python environment holding only what a registered model's requirements.txt names: no
torch, no Graft. What a serving stack builds from the registry, built here for real.

Installing it takes about 45 s (MLflow, ONNX, ONNX Runtime and their dependencies, from pip's
cache or the package index), so the environment is kept between test runs under the user's
cache, keyed by the requirements' hash; a missing or half-built one is rebuilt.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "graft-tests"
COMPLETE = ".complete"


def runtime_python(requirements: Path) -> Path:
    """The interpreter of a venv with exactly ``requirements`` installed (cached)."""
    text = requirements.read_text()
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    venv = CACHE / f"model-runtime-{digest}"
    python = venv / "bin" / "python"
    if (venv / COMPLETE).is_file():
        return python
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    # the base interpreter, not this venv's: the new one must not see Graft or torch
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(venv)], check=True)
    (venv / "requirements.txt").write_text(text)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "-r", str(venv / "requirements.txt")],
        check=True,
        timeout=600,
    )
    (venv / COMPLETE).write_text(text)
    return python


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for that interpreter: nothing that would lead it to this checkout."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {**env, **extra}
