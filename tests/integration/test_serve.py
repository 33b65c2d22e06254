"""`graft serve` over real HTTP: a model registered in a local store, served by the CLI in a
subprocess, answers as the ONNX model does, refuses bad requests with a 4xx and one line, and
stops cleanly on SIGTERM.

The requests are what curl sends (urllib, JSON bodies in MLflow's scoring format); the
expected answers come from ONNX Runtime on the same file (graft.export.served_model.predict).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from graft.config import load_config
from graft.errors import RegistryError
from graft.export.scoring_server import load_served_model
from graft.export.served_model import LABEL_OUTPUT, PROBABILITIES_OUTPUT, predict
from graft.io import registry, tracking
from onnx_models import served_onnx
from servers import answers_http, free_port

MODEL_NAME = "graft-serve"
START_TIMEOUT_S = 60


@dataclass
class Store:
    overrides: list[str]
    onnx_path: Path
    example: np.ndarray
    tmp_path: Path


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log: Path


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """A champion registered in a SQLite store (no training: tests/onnx_models.py's model,
    3 features, classes no/yes, no NaN fill)."""
    tmp_path = tmp_path_factory.mktemp("serve")
    overrides = [
        f"work_dir={tmp_path / 'work'}",
        f"tracking.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
        "tracking.experiment_name=serve",
        f"tracking.artifact_location={tmp_path / 'artifacts'}",
        f"export.model_name={MODEL_NAME}",
    ]
    config = load_config(preset="tiny", overrides=overrides)
    run_id = tracking.start_pipeline_run(config, "serve")
    onnx_path, example, outputs = served_onnx(tmp_path / "onnx")
    version = registry.register_model(config, run_id, onnx_path, example, outputs)
    registry.set_alias(config, "champion", version)
    return Store(overrides, onnx_path, example, tmp_path)


def _start(store: Store, name: str) -> Server:
    """`graft serve` with the config's default model (models:/graft-serve@champion)."""
    port = free_port()
    log = store.tmp_path / f"{name}.log"
    sets = [f"--set={override}" for override in store.overrides]
    command = [sys.executable, "-m", "graft.cli", "serve", "--preset", "tiny", *sets]
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*command, "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=store.tmp_path,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while not answers_http(f"{url}/ping"):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"graft serve did not come up:\n{log.read_text()}")
        time.sleep(0.2)
    return Server(url, process, log)


@pytest.fixture(scope="module")
def server(store: Store) -> Iterator[Server]:
    running = _start(store, "serve")
    yield running
    running.process.kill()
    running.process.wait()


def _request(
    url: str,
    body: bytes | None = None,
    content_type: str = "application/json",
    method: str = "POST",
) -> tuple[int, str]:
    request = urllib.request.Request(
        url, data=body, method=method, headers={"Content-Type": content_type}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _invoke(server: Server, payload: dict[str, Any]) -> dict[str, Any]:
    status, text = _request(f"{server.url}/invocations", json.dumps(payload).encode())
    assert status == 200, text
    predictions: dict[str, Any] = json.loads(text)["predictions"]
    return predictions


def test_answers_equal_the_onnx_models_in_every_request_format(
    server: Server, store: Store
) -> None:
    rows = np.vstack(
        [store.example, np.random.default_rng(1).normal(size=(60, 3)).astype(np.float32)]
    )
    expected = predict(store.onnx_path, rows)
    for payload in (
        {"inputs": rows.tolist()},
        {"inputs": {"input": rows.tolist()}},
        {"instances": rows.tolist()},
        {"dataframe_split": {"columns": ["a", "b", "c"], "data": rows.tolist()}},
    ):
        answer = _invoke(server, payload)
        assert answer[LABEL_OUTPUT] == [str(label) for label in expected[LABEL_OUTPUT]]
        np.testing.assert_allclose(
            answer[PROBABILITIES_OUTPUT], expected[PROBABILITIES_OUTPUT], rtol=0, atol=1e-6
        )
    one = _invoke(server, {"inputs": rows[:1].tolist()})
    assert one[LABEL_OUTPUT] == [str(expected[LABEL_OUTPUT][0])]
    assert len(set(expected[LABEL_OUTPUT])) == 2  # both classes appear among the rows


def test_it_says_where_it_listens_and_its_example_curl_works(server: Server) -> None:
    log = server.log.read_text()
    assert f"Serving models:/{MODEL_NAME}@champion on {server.url}" in log
    (data,) = re.findall(rf"curl -s {server.url}/invocations .* -d '(.*)'", log)
    answer = _invoke(server, json.loads(data))
    assert answer[LABEL_OUTPUT][0] in ("no", "yes")
    status, text = _request(f"{server.url}/health", method="GET")
    assert status == 200 and MODEL_NAME in text


BAD_REQUESTS: dict[str, tuple[bytes, int, str]] = {
    "not-json": (b"rows please", 400, "the body is not JSON"),
    "empty-body": (b"", 400, "the body is not JSON"),
    "not-utf8": (b"\xff\xfe{", 400, "the body is not JSON"),
    "a-list-not-an-object": (b"[[1, 2, 3]]", 400, "expected a JSON object"),
    "unknown-key": (b'{"rows": [[1, 2, 3]]}', 400, "expected exactly one of inputs"),
    "params": (b'{"inputs": [[1, 2, 3]], "params": {"t": 1}}', 400, "takes no params"),
    "too-narrow": (b'{"inputs": [[1, 2]]}', 400, "shape (rows, 3), got (1, 2)"),
    "too-wide": (b'{"inputs": [[1, 2, 3, 4]]}', 400, "shape (rows, 3), got (1, 4)"),
    "unwrapped-row": (b'{"inputs": [1, 2, 3]}', 400, "wrap a single row in a list"),
    "too-deep": (b'{"inputs": [[[1, 2, 3]]]}', 400, "got (1, 1, 3)"),
    "no-rows": (b'{"inputs": []}', 400, "no values"),
    "ragged": (b'{"inputs": [[1, 2, 3], [1, 2]]}', 400, "not a rectangular array"),
    "strings": (b'{"inputs": [["a", "b", "c"]]}', 400, 'got a string ("a")'),
    "numeric-strings": (b'{"inputs": [["1", "2", "3"]]}', 400, "got a string"),
    "a-string-among-numbers": (b'{"inputs": [[1, "x", 3]]}', 400, 'got a string ("x")'),
    "an-object-among-numbers": (b'{"inputs": [[1, {"a": 1}, 3]]}', 400, "got dict"),
    "booleans": (b'{"inputs": [[true, false, true]]}', 400, "got true/false"),
    "null-without-a-fill": (b'{"inputs": [[1, null, 3]]}', 400, "row 0, column 1 is missing"),
    "nan-without-a-fill": (b'{"inputs": [[1, 2, 3], [NaN, 2, 3]]}', 400, "has no NaN fill"),
    "infinity": (b'{"inputs": [[1, Infinity, 3]]}', 400, "is infinite"),
    "beyond-float32": (b'{"inputs": [[1, 1e39, 3]]}', 400, "beyond float32"),
    "nested-too-deeply": (b"[" * 100_000, 400, "nested too deeply"),
    "wrong-input-name": (b'{"inputs": {"x": [[1, 2, 3]]}}', 400, "one input, 'input'"),
    "records": (b'{"dataframe_records": [{"a": 1}]}', 400, "needs column names"),
    "split-columns": (
        b'{"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2, 3]]}}',
        400,
        "names 2 columns; the model takes 3",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_a_bad_request_gets_a_400_with_one_line_and_no_traceback(server: Server, case: str) -> None:
    body, status, message = BAD_REQUESTS[case]
    got, text = _request(f"{server.url}/invocations", body)
    _assert_one_line_error(got, text, status, message)


@pytest.mark.parametrize(
    ("path", "method", "content_type", "status", "message"),
    [
        ("/invocations", "POST", "text/csv", 415, "Content-Type: application/json"),
        ("/invocations", "POST", "application/x-www-form-urlencoded", 415, "application/json"),
        ("/invocations", "GET", "application/json", 405, "answers POST"),
        ("/predict", "POST", "application/json", 404, "POST rows to /invocations"),
    ],
)
def test_wrong_routes_methods_and_media_types_get_a_4xx(
    server: Server, path: str, method: str, content_type: str, status: int, message: str
) -> None:
    body = None if method == "GET" else b'{"inputs": [[1, 2, 3]]}'
    got, text = _request(f"{server.url}{path}", body, content_type, method)
    _assert_one_line_error(got, text, status, message)


def _assert_one_line_error(got: int, text: str, status: int, message: str) -> None:
    assert got == status, text
    assert "Traceback" not in text
    error = json.loads(text)
    assert message in error["message"]
    assert "\n" not in error["message"] and len(error["message"]) < 400


def test_sigterm_stops_it_cleanly(store: Store) -> None:
    """What Kubernetes sends a pod it stops: the server ends with status 0, without a
    traceback, and its port is closed."""
    server = _start(store, "sigterm")
    assert _invoke(server, {"inputs": store.example.tolist()})
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=20) == 0
    log = server.log.read_text()
    assert "Traceback" not in log and log.rstrip().endswith("stopped")
    assert not answers_http(f"{server.url}/ping")


def test_a_model_that_is_not_there_is_one_clear_error(store: Store, tmp_path: Path) -> None:
    config = load_config(preset="tiny", overrides=store.overrides)
    with pytest.raises(RegistryError, match=rf"no model at models:/{MODEL_NAME}@nope in sqlite"):
        load_served_model(config, f"models:/{MODEL_NAME}@nope", tmp_path, threads=1)
