"""What ``graft serve`` accepts: a JSON body in MLflow's scoring format, turned into the rows
the served model takes, or a one-line reason why it cannot be.

The formats are those of ``mlflow models serve``'s ``/invocations``: ``{"inputs": rows}``
(or ``{"inputs": {"input": rows}}``), ``{"instances": rows}`` and ``{"dataframe_split":
{"columns": [...], "data": rows}}``. A value is a number; ``null`` or ``NaN`` is a missing
value, accepted only by a model whose graph fills NaNs (graft.export.served_model's
``FILLS_MISSING_KEY``): through any other network a NaN gives a meaningless answer, not an
error. Anything else (strings, booleans, ragged rows, the wrong width, infinities) is refused
here, before the model runs, with a :class:`ScoringRequestError` that the server answers with
a 400.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from graft.errors import ScoringRequestError

ROW_KEYS = ("inputs", "instances", "dataframe_split")
EXAMPLE = '{"inputs": [[1.0, 2.0, ...], ...]}'


@dataclass(frozen=True)
class InputSpec:
    """What the served model takes: its input's name, one row's shape (None: a dimension of
    any size) and whether its graph fills NaNs."""

    name: str
    row_shape: tuple[int | None, ...]
    fills_missing: bool

    def shape_text(self) -> str:
        dims = ", ".join("any" if dim is None else str(dim) for dim in self.row_shape)
        return f"(rows, {dims})"


def rows_from_body(body: bytes, spec: InputSpec) -> np.ndarray:
    """The float32 rows in a request ``body``; raises ScoringRequestError naming what is
    wrong and what to send instead."""
    try:
        document = json.loads(body)
    except RecursionError as exc:
        raise ScoringRequestError("the JSON body is nested too deeply") from exc
    except ValueError as exc:  # JSONDecodeError, bad UTF-8, an integer of 5,000 digits
        reason = " ".join(str(exc).split())[:200]
        raise ScoringRequestError(f"the body is not JSON ({reason}); send {EXAMPLE}") from exc
    rows = _numbers(_rows_value(document, spec))
    _check_shape(rows, spec)
    return _checked_values(rows, spec)


def _rows_value(document: Any, spec: InputSpec) -> Any:
    """The rows part of an MLflow scoring request, from whichever format it uses."""
    if not isinstance(document, dict):
        raise ScoringRequestError(f"expected a JSON object such as {EXAMPLE}")
    if "params" in document:
        raise ScoringRequestError("this model takes no params; send the rows only")
    if "dataframe_records" in document:
        raise ScoringRequestError(
            "dataframe_records needs column names, which this model has none of; send "
            f'{EXAMPLE} or {{"dataframe_split": {{"data": [[...], ...]}}}}'
        )
    keys = [key for key in document if key in ROW_KEYS]
    unknown = sorted(str(key) for key in document if key not in ROW_KEYS)
    if len(keys) != 1 or unknown:
        raise ScoringRequestError(
            f"expected exactly one of {', '.join(ROW_KEYS)} in the JSON object, got "
            f"{sorted(str(key) for key in document) or 'none'}; send {EXAMPLE}"
        )
    value = document[keys[0]]
    if keys[0] == "dataframe_split":
        return _dataframe_rows(value, spec)
    if isinstance(value, dict):  # named tensors: {"inputs": {"input": rows}}
        if list(value) != [spec.name]:
            raise ScoringRequestError(
                f"this model has one input, '{spec.name}'; got {sorted(map(str, value))}"
            )
        return value[spec.name]
    return value


def _dataframe_rows(split: Any, spec: InputSpec) -> Any:
    if not isinstance(split, dict) or "data" not in split:
        raise ScoringRequestError(
            'dataframe_split must be an object with "data" (a list of rows) and optionally '
            '"columns"'
        )
    if len(spec.row_shape) != 1:
        raise ScoringRequestError(
            f"this model takes {spec.shape_text()} arrays, which a data frame cannot hold; "
            f'send {{"inputs": ...}}'
        )
    columns = split.get("columns")
    width = spec.row_shape[0]
    if columns is not None and (not isinstance(columns, list) or len(columns) != width):
        count = len(columns) if isinstance(columns, list) else "no list of"
        raise ScoringRequestError(f"dataframe_split names {count} columns; the model takes {width}")
    return split["data"]


def _numbers(value: Any) -> np.ndarray:
    """``value`` as a float64 array, NaN where it holds null; refuses anything not a number."""
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as exc:  # ragged rows
        raise ScoringRequestError(
            "the rows are not a rectangular array (rows of different lengths, or a list where "
            "a number belongs)"
        ) from exc
    if array.dtype.kind in "iuf":
        return array.astype(np.float64)
    if array.dtype.kind in "US":
        raise ScoringRequestError(f"values must be numbers, got a string ({_first_string(array)})")
    if array.dtype.kind == "b":
        raise ScoringRequestError("values must be numbers, got true/false")
    if array.dtype.kind != "O":
        raise ScoringRequestError(f"values must be numbers, got {array.dtype}")
    flat = np.empty(array.size, dtype=np.float64)
    for index, item in enumerate(array.flat):
        flat[index] = _number(item)
    return flat.reshape(array.shape)


def _number(item: Any) -> float:
    if item is None:
        return math.nan
    if isinstance(item, bool) or not isinstance(item, int | float):
        shown = json.dumps(item)[:40] if isinstance(item, str | bool) else type(item).__name__
        raise ScoringRequestError(f"values must be numbers or null, got {shown}")
    try:
        return float(item)
    except OverflowError as exc:  # an integer beyond float64
        raise ScoringRequestError("a value is beyond float32's range (about 3.4e38)") from exc


def _first_string(array: np.ndarray) -> str:
    """The first value that is no number in a string array (numpy turns the numbers of a
    list that holds a string into strings too)."""
    values = [str(item) for item in array.flat]
    for value in values:
        try:
            float(value)
        except ValueError:
            return json.dumps(value)[:40]
    return json.dumps(values[0])[:40]


def _check_shape(rows: np.ndarray, spec: InputSpec) -> None:
    if rows.size == 0:
        raise ScoringRequestError(f"the request holds no values; send {EXAMPLE}")
    wanted = len(spec.row_shape) + 1
    fits = rows.ndim == wanted and all(
        dim is None or got == dim for got, dim in zip(rows.shape[1:], spec.row_shape, strict=True)
    )
    if not fits:
        hint = ": wrap a single row in a list, [[...]]" if rows.ndim == wanted - 1 else ""
        raise ScoringRequestError(
            f"expected an array of shape {spec.shape_text()}, got {tuple(rows.shape)}{hint}"
        )


def _checked_values(rows: np.ndarray, spec: InputSpec) -> np.ndarray:
    """``rows`` as float32; refuses infinities, values float32 cannot hold, and NaNs unless
    the model fills them."""
    with np.errstate(over="ignore"):
        single = rows.astype(np.float32)
    infinite = np.isinf(single)
    if infinite.any():
        raise ScoringRequestError(
            f"{_position(infinite)} is infinite or beyond float32's range (about 3.4e38); send "
            "finite numbers"
        )
    missing = np.isnan(single)
    if missing.any() and not spec.fills_missing:
        raise ScoringRequestError(
            f"{_position(missing)} is missing (null or NaN), and this model has no NaN fill "
            "(its training data had no gaps): it would answer with garbage. Send every value"
        )
    return single


def _position(mask: np.ndarray) -> str:
    first = [int(i) for i in np.argwhere(mask)[0]]
    column = first[1] if len(first) == 2 else tuple(first[1:])
    return f"the value at row {first[0]}, column {column}"
