"""What `graft serve` accepts, without a server: MLflow's request formats become float32 rows;
a model that fills NaNs takes null and NaN; the app answers an oversized body with a 413; and
the export stage's ONNX file says whether it fills NaNs. Over HTTP: tests/integration/
test_serve.py."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from graft.errors import ScoringRequestError
from graft.export.scoring_request import InputSpec, rows_from_body
from graft.export.scoring_server import MAX_BODY_BYTES, ScoringApp, ServedModel
from graft.export.served_model import FILLS_MISSING_KEY, record_missing_fill
from onnx_models import served_onnx

TABULAR = InputSpec(name="input", row_shape=(3,), fills_missing=False)
FILLED = InputSpec(name="input", row_shape=(3,), fills_missing=True)
IMAGES = InputSpec(name="input", row_shape=(1, 2, 2), fills_missing=False)


def _rows(payload: Any, spec: InputSpec = TABULAR) -> np.ndarray:
    return rows_from_body(json.dumps(payload).encode(), spec)


def test_every_mlflow_format_gives_the_same_float32_rows() -> None:
    rows = [[1, 2.5, -3], [0, 1e-3, 7]]
    expected = np.array(rows, dtype=np.float32)
    for payload in (
        {"inputs": rows},
        {"inputs": {"input": rows}},
        {"instances": rows},
        {"dataframe_split": {"columns": ["a", "b", "c"], "index": [0, 1], "data": rows}},
        {"dataframe_split": {"data": rows}},
    ):
        got = _rows(payload)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, expected)


def test_a_model_that_fills_nans_takes_null_and_nan() -> None:
    got = rows_from_body(b'{"inputs": [[1, null, 3], [NaN, 2, 3]]}', FILLED)
    assert np.isnan(got[0, 1]) and np.isnan(got[1, 0])
    assert np.count_nonzero(np.isnan(got)) == 2
    with pytest.raises(ScoringRequestError, match="is infinite"):
        rows_from_body(b'{"inputs": [[1, -Infinity, 3]]}', FILLED)


def test_tensor_rows_keep_their_shape_and_a_data_frame_is_refused() -> None:
    image = [[[0.1, 0.2], [0.3, 0.4]]]
    assert _rows({"inputs": [image, image]}, IMAGES).shape == (2, 1, 2, 2)
    with pytest.raises(ScoringRequestError, match=r"shape \(rows, 1, 2, 2\), got \(1, 2, 2\)"):
        _rows({"inputs": image}, IMAGES)
    with pytest.raises(ScoringRequestError, match="a data frame cannot hold"):
        _rows({"dataframe_split": {"data": [image]}}, IMAGES)
    with pytest.raises(ScoringRequestError, match=r"row 0, column \(0, 1, 1\) is missing"):
        _rows({"inputs": [[[[0.1, 0.2], [0.3, None]]]]}, IMAGES)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"inputs": [[1, 2, 10**400]]}, "beyond float32"),
        ({"inputs": [[1, 2, 3]], "instances": [[1, 2, 3]]}, "exactly one of"),
        ({"dataframe_split": [[1, 2, 3]]}, 'must be an object with "data"'),
        ({"inputs": [[1, 2, [3]]]}, "not a rectangular array"),
    ],
)
def test_more_refusals(payload: Any, message: str) -> None:
    with pytest.raises(ScoringRequestError, match=message):
        _rows(payload)


class _Model:
    """A stand-in for ServedModel: the app needs its uri, spec and predict."""

    uri = "models:/m@champion"
    spec = TABULAR

    def predict(self, rows: np.ndarray) -> dict[str, Any]:
        return {"label": ["yes"] * len(rows)}


def _call(app: ScoringApp, body: bytes, chunks: int = 1) -> tuple[int, dict[str, Any]]:
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/invocations",
        "headers": [(b"content-type", b"application/json")],
    }
    size = -(-len(body) // chunks)
    parts = [body[i : i + size] for i in range(0, len(body), size)] or [b""]
    messages = [
        {"type": "http.request", "body": part, "more_body": index < len(parts) - 1}
        for index, part in enumerate(parts)
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], json.loads(sent[1]["body"])


def test_the_app_answers_in_chunks_and_refuses_an_oversized_body_with_413() -> None:
    app = ScoringApp(_Model())  # type: ignore[arg-type]
    status, answer = _call(app, b'{"inputs": [[1, 2, 3], [4, 5, 6]]}', chunks=3)
    assert status == 200 and answer == {"predictions": {"label": ["yes", "yes"]}}
    status, answer = _call(app, b" " * (MAX_BODY_BYTES + 1), chunks=4)
    assert status == 413 and answer["error_code"] == "REQUEST_TOO_LARGE"


def test_a_model_file_says_whether_it_fills_nans(tmp_path: Path) -> None:
    """The export stage writes the flag (graft.export.bundle); the server reads it."""
    onnx_path, _, _ = served_onnx(tmp_path)
    (tmp_path / "MLmodel").write_text(f"flavors:\n  onnx:\n    data: {onnx_path.name}\n")
    unmarked = ServedModel.from_folder(tmp_path, "unmarked", threads=1)
    assert unmarked.spec == InputSpec("input", (3,), fills_missing=False)
    record_missing_fill(onnx_path, fills_missing=True)
    marked = ServedModel.from_folder(tmp_path, "marked", threads=1)
    assert marked.spec.fills_missing is True
    assert marked.session.get_modelmeta().custom_metadata_map[FILLS_MISSING_KEY] == "true"
    record_missing_fill(onnx_path, fills_missing=False)
    assert ServedModel.from_folder(tmp_path, "no-fill", threads=1).spec.fills_missing is False
