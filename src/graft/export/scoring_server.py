"""``graft serve``: the registered model over HTTP, where ``mlflow models serve`` would put it.

The same routes and formats as MLflow's scoring server: ``POST /invocations`` with
``{"inputs": rows}`` (graft.export.scoring_request lists the others) answers
``{"predictions": {"label": [...], "probabilities": [[...]]}}``; ``GET /ping`` and
``GET /health`` answer 200 once the model is loaded. What differs is the errors: a request the
model cannot take (not JSON, strings, the wrong width, NaNs the graph does not fill) gets a
4xx and ``{"error_code": ..., "message": one line}``, never a 500 with a traceback.

The model is the registry version's ONNX file (MLflow's ``onnx`` flavor), run by ONNX Runtime
as ``mlflow.pyfunc`` runs it, without MLflow in the request path; a small ASGI app under
uvicorn (both come with MLflow) serves it. SIGINT and SIGTERM stop it after the requests in
flight.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from graft.config import GraftConfig
from graft.errors import GraftError, RegistryError, ScoringRequestError
from graft.export.scoring_request import InputSpec, rows_from_body
from graft.export.served_model import FILLS_MISSING_KEY
from graft.io import registry
from graft.io.termination import INTERRUPTS

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 16 * 1024 * 1024  # about 500,000 numbers
GRACEFUL_SHUTDOWN_S = 10  # in-flight requests finish; Kubernetes waits 30 s before SIGKILL
HEALTH_PATHS = ("/ping", "/health")
INVOCATIONS_PATH = "/invocations"
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]


@dataclass
class ServedModel:
    """An MLflow ``onnx``-flavor model folder, loaded into an ONNX Runtime session."""

    uri: str
    session: Any
    spec: InputSpec
    output_names: list[str]
    example_row: list[Any]

    @classmethod
    def from_folder(cls, folder: Path, uri: str, threads: int) -> ServedModel:
        import onnxruntime

        onnx_path = folder / _onnx_file(folder, uri)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(
            str(onnx_path), options, providers=["CPUExecutionProvider"]
        )
        (model_input, *others) = session.get_inputs()
        if others or model_input.type != "tensor(float)" or len(model_input.shape) < 2:
            raise RegistryError(
                f"{uri} takes {[(i.name, i.type, i.shape) for i in session.get_inputs()]}; "
                "graft serve serves one float32 input of shape (rows, ...), as Graft's export "
                "registers it"
            )
        metadata = session.get_modelmeta().custom_metadata_map
        spec = InputSpec(
            name=model_input.name,
            row_shape=tuple(d if isinstance(d, int) else None for d in model_input.shape[1:]),
            fills_missing=metadata.get(FILLS_MISSING_KEY) == "true",
        )
        if FILLS_MISSING_KEY not in metadata:
            log.warning("%s does not say whether it fills NaNs: rows with NaN are refused", uri)
        outputs = [output.name for output in session.get_outputs()]
        return cls(uri, session, spec, outputs, _example_row(folder, spec))

    def predict(self, rows: np.ndarray) -> dict[str, Any]:
        """Every output of the graph on ``rows``, as JSON-ready lists."""
        values = self.session.run(self.output_names, {self.spec.name: rows})
        return {
            name: np.asarray(value).tolist()
            for name, value in zip(self.output_names, values, strict=True)
        }


def _onnx_file(folder: Path, uri: str) -> str:
    """The ONNX file an MLflow model folder names in its MLmodel file."""
    mlmodel = folder / "MLmodel"
    if not mlmodel.is_file():
        raise RegistryError(f"{uri} is not an MLflow model folder: it has no MLmodel file")
    flavors = (yaml.safe_load(mlmodel.read_text()) or {}).get("flavors") or {}
    if "onnx" not in flavors:
        raise RegistryError(
            f"{uri} has no ONNX flavor (it has {sorted(flavors)}): a version registered by an "
            "older Graft, which logged a pickled PyTorch model. Serve a version this Graft's "
            "export registered"
        )
    return str(flavors["onnx"]["data"])


def _example_row(folder: Path, spec: InputSpec) -> list[Any]:
    """The first row of the model's input example (what the startup curl sends), or zeros."""
    example = folder / "serving_input_example.json"
    try:
        row = json.loads(example.read_text())["inputs"][0]
        values = np.asarray(row, dtype=np.float64)
        if values.shape == tuple(d or 1 for d in spec.row_shape):
            shown = np.round(values, 4).astype(object)
            shown[np.isnan(values)] = None  # a gap, as JSON writes it
            return list(shown.tolist())
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        pass
    return np.zeros([d or 1 for d in spec.row_shape]).tolist()


def load_served_model(config: GraftConfig, model_uri: str, into: Path, threads: int) -> ServedModel:
    """The model at ``model_uri``, downloaded from the config's tracking server into ``into``."""
    return ServedModel.from_folder(
        registry.download_model(config, model_uri, into), model_uri, threads
    )


# ----------------------------------------------------------------------------- HTTP


class HttpError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class ScoringApp:
    """The ASGI app: health, invocations, and a one-line JSON error for everything else."""

    def __init__(self, model: ServedModel) -> None:
        self.model = model

    async def __call__(
        self,
        scope: Scope,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            return
        try:
            status, answer = 200, await self._answer(scope, receive)
        except HttpError as exc:
            status, answer = exc.status, {"error_code": exc.code, "message": exc.message}
        except Exception as exc:  # a fault of the model or of this server, not of the request
            log.exception("%s %s failed", scope["method"], scope["path"])
            status = 500
            answer = {
                "error_code": "INTERNAL_ERROR",
                "message": f"{type(exc).__name__}; see the server log",
            }
        body = json.dumps(answer).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _answer(self, scope: Scope, receive: Callable[[], Awaitable[Message]]) -> Any:
        path, method = scope["path"], scope["method"]
        if path in HEALTH_PATHS:
            if method not in ("GET", "HEAD"):
                raise HttpError(405, "METHOD_NOT_ALLOWED", f"{path} answers GET")
            return {"status": "ok", "model": self.model.uri}
        if path != INVOCATIONS_PATH:
            raise HttpError(404, "NOT_FOUND", f"no route {path}; POST rows to {INVOCATIONS_PATH}")
        if method != "POST":
            raise HttpError(405, "METHOD_NOT_ALLOWED", f"{INVOCATIONS_PATH} answers POST")
        _check_content_type(scope)
        body = await _read_body(receive)
        try:
            rows = rows_from_body(body, self.model.spec)
        except ScoringRequestError as exc:
            raise HttpError(400, "BAD_REQUEST", str(exc)) from exc
        return {"predictions": self.model.predict(rows)}


def _check_content_type(scope: Scope) -> None:
    headers = dict(scope["headers"])
    content_type = headers.get(b"content-type", b"").decode("latin-1")
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise HttpError(
            415,
            "UNSUPPORTED_MEDIA_TYPE",
            f"send JSON with Content-Type: application/json (got {content_type[:60]!r})",
        )


async def _read_body(receive: Callable[[], Awaitable[Message]]) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise HttpError(400, "BAD_REQUEST", "the client went away before the body ended")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise HttpError(
                413,
                "REQUEST_TOO_LARGE",
                f"the body is over {MAX_BODY_BYTES} bytes; send fewer rows",
            )
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (port 0: a free one), or GraftError saying why not."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named: asyncio sets TCP_NODELAY only on sockets that say so, and without it
    # each answer on a kept-alive connection waits 40 ms for the client's delayed ACK
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise GraftError(
            f"cannot listen on {host}:{port}: {exc.strerror}; pick another --port"
        ) from exc
    sock.listen(2048)
    return sock


def run_server(model: ServedModel, sock: socket.socket) -> None:
    """Serve ``model`` on ``sock`` until SIGINT or SIGTERM; returns once stopped."""
    import uvicorn

    config = uvicorn.Config(
        ScoringApp(model),
        lifespan="off",
        ws="none",
        log_config=None,  # Graft's logging (GRAFT_LOG_LEVEL) keeps uvicorn's records
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )
    try:
        # uvicorn stops on SIGINT/SIGTERM itself, then raises the signal again for the
        # handlers it replaced (KeyboardInterrupt, graft.io.termination's Terminated)
        uvicorn.Server(config).run(sockets=[sock])
    except INTERRUPTS:
        pass
    finally:
        sock.close()
