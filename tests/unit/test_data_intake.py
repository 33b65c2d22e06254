"""Bad data ends in one DatasetError that names the user's own file (issue 18): corrupted
archives, shapes and dtypes a model cannot take, and labels that are not class ids."""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_helpers import assert_one_clear_error, run_graft

from graft.config import DataConfig
from graft.data.prepare import check_source
from graft.errors import DatasetError

ROWS = 40


def _table() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.normal(size=(ROWS, 3)).astype(np.float32), np.arange(ROWS) % 2


def _npz(path: Path, **arrays: object) -> Path:
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


def _truncated(path: Path) -> Path:
    x, y = _table()
    data = _npz(path, x=x, y=y).read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _crc_corrupt(path: Path) -> Path:
    """One bit of x's stored bytes flipped: the zip's CRC no longer matches."""
    x, y = _table()
    _npz(path, x=x, y=y)
    with zipfile.ZipFile(path) as archive:
        member = archive.getinfo("x.npy")
    data = bytearray(path.read_bytes())
    data[member.header_offset + 30 + len(member.filename) + 200] ^= 0x01
    path.write_bytes(bytes(data))
    return path


CASES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "truncated archive": (_truncated, "is not a readable .npz file"),
    "CRC-corrupt archive": (_crc_corrupt, "is not a readable .npz file"),
    "label 2**33": (
        lambda p: _npz(p, x=_table()[0], y=np.where(np.arange(ROWS) == 7, 2**33, _table()[1])),
        "label 8589934592 in rows 7 is not a class id",
    ),
    "1-D features": (
        lambda p: _npz(p, x=np.arange(ROWS, dtype=np.float32), y=_table()[1]),
        "shape",
    ),
    "0-D features": (lambda p: _npz(p, x=np.float32(1), y=_table()[1]), "shape ()"),
    "5-D features": (
        lambda p: _npz(p, x=np.zeros((ROWS, 1, 2, 2, 2), np.float32), y=_table()[1]),
        "use N x F for a table",
    ),
    "channel-last images": (
        lambda p: _npz(p, x=np.zeros((ROWS, 8, 8, 3), np.float32), y=_table()[1]),
        "looks channel-last",
    ),
    "complex features": (
        lambda p: _npz(p, x=_table()[0] + 1j, y=_table()[1]),
        "features must be real numbers",
    ),
    "string labels": (
        lambda p: _npz(p, x=_table()[0], y=np.array(["a", "b"] * (ROWS // 2))),
        "labels must be integer class ids",
    ),
    "NaN labels": (
        lambda p: _npz(p, x=_table()[0], y=np.where(np.arange(ROWS) == 3, np.nan, 1.0)),
        "labels must be integer class ids",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_data_is_one_dataset_error_naming_the_users_file(tmp_path: Path, case: str) -> None:
    write, fragment = CASES[case]
    source = str(write(tmp_path / "user's data#1.npz"))
    with pytest.raises(DatasetError) as caught:
        check_source(DataConfig(source=source))
    message = str(caught.value)
    assert fragment in message
    if "readable" in fragment or "shape" in fragment or "real numbers" in fragment:
        assert source in message  # the user's path, not Graft's temporary copy
    assert "graft-data-" not in message


def test_a_table_without_feature_columns_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "labels-only.parquet"
    pd.DataFrame({"label": np.arange(ROWS) % 2}).to_parquet(source)
    with pytest.raises(DatasetError, match="no feature columns"):
        check_source(DataConfig(source=str(source)))


def test_the_cli_names_the_users_file_for_a_corrupt_archive(tmp_path: Path) -> None:
    source = _crc_corrupt(tmp_path / "mine.npz")
    result = run_graft("run", "-p", "tiny", "--set", f"data.source={source}")
    line = assert_one_clear_error(result, f"{source} is not a readable .npz file")
    assert "graft-data-" not in line
