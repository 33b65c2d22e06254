"""``graft ui``: MLflow's web UI on the tracking store a local run wrote."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

from graft.cli.options import console
from graft.errors import GraftError


def ui(
    work_dir: Annotated[Path, typer.Option(help="The run folder holding mlflow.db.")] = Path(
        "work"
    ),
    port: Annotated[int, typer.Option(help="Port for the MLflow UI.")] = 5000,
) -> None:
    """Open the MLflow UI on the local tracking store of a run folder."""
    if not _mlflow_server_installed():
        raise GraftError(
            "the MLflow UI needs MLflow's server, which this install leaves out (the images "
            "carry only its client): pip install 'graft[server]'"
        )
    db = (work_dir / "mlflow.db").resolve()
    if not db.exists():
        raise GraftError(f"no MLflow store at {db}; run `graft run` first or pass --work-dir")
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        f"sqlite:///{db}",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    console.print(f"MLflow UI on http://127.0.0.1:{port} (Ctrl-C to stop)")
    raise typer.Exit(subprocess.call(command))


def _mlflow_server_installed() -> bool:
    # `mlflow` (the full distribution) brings the server and the web UI; `mlflow-skinny`,
    # which is all that Graft itself needs, has neither.
    try:
        importlib.metadata.version("mlflow")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True
