"""``graft serve``: the registered champion (or any MLflow model URI) over HTTP."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from graft.cli.options import ConfigOption, PresetOption, SetOption, console, layered_config

CHAMPION_URI = "models:/{name}@champion"


def serve(
    model: Annotated[
        str | None,
        typer.Option(
            help="MLflow model URI: models:/NAME@ALIAS, models:/NAME/VERSION, runs:/ID/model. "
            "Default: models:/<export.model_name>@champion from the config.",
        ),
    ] = None,
    port: Annotated[int, typer.Option(help="Port to listen on (0: a free one).")] = 8080,
    host: Annotated[
        str, typer.Option(help="Address to listen on; 0.0.0.0 for every interface (a pod).")
    ] = "127.0.0.1",
    threads: Annotated[
        int,
        typer.Option(
            min=1,
            help="ONNX Runtime threads per request; 1 suits small models and a pod with a "
            "CPU limit of 1 or 2.",
        ),
    ] = 1,
    config: ConfigOption = None,
    preset: PresetOption = None,
    set_: SetOption = None,
) -> None:
    """Serve a registered model over HTTP, as `mlflow models serve` does: POST rows to
    /invocations, e.g. {"inputs": [[...], ...]} (or "instances", or "dataframe_split"), and get
    {"predictions": {"label": [...], "probabilities": [[...]]}}; GET /ping or /health says it
    is up. The model is downloaded from the config's tracking server
    (tracking.tracking_uri, else MLFLOW_TRACKING_URI; the user from MLFLOW_TRACKING_USERNAME
    and MLFLOW_TRACKING_PASSWORD) and run by ONNX Runtime. A request the model cannot take
    (not JSON, strings, the wrong width, NaN where the model has no NaN fill) gets a 4xx with
    a one-line message. Ctrl-C or SIGTERM stops it after the requests in flight."""
    from graft.export.scoring_server import listening_socket, load_served_model, run_server

    resolved = layered_config(config, preset, set_)
    uri = model or CHAMPION_URI.format(name=resolved.export.model_name)
    with tempfile.TemporaryDirectory(prefix="graft-serve-") as folder:
        # ONNX Runtime holds the graph in memory: the downloaded files can go
        served = load_served_model(resolved, uri, Path(folder), threads)
    sock = listening_socket(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    url = f"http://{bound_host}:{bound_port}"
    rows = json.dumps({"inputs": [served.example_row]})
    console.print(f"Serving {uri} on {url} (Ctrl-C to stop). Try:", markup=False, soft_wrap=True)
    console.print(
        f"  curl -s {url}/invocations -H 'Content-Type: application/json' -d '{rows}'",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    run_server(served, sock)
    console.print("stopped")
