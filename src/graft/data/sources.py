"""Read a dataset from where the config says it is: built-ins, local files, or s3://.

Every source yields a :class:`RawDataset` of numeric features ``x`` (images as N x C x H x W,
tables as N x F) and integer labels ``y``: a table's string labels become ids 0..K-1 into
their sorted distinct values, its class names. Nothing here needs the network except s3://.
"""

from __future__ import annotations

import csv
import gzip
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from graft.config.data import ImageConfig
from graft.data.image_folder import read_image_folder
from graft.data.intake_limits import check_fits_in_memory, check_npz
from graft.errors import DatasetError
from graft.io import storage

if TYPE_CHECKING:
    import pandas as pd

IMAGE_CHANNELS = (1, 3, 4)  # grey, RGB, RGBA
DATA_FILE_SUFFIXES = (".npz", ".parquet", ".csv")  # anything else may be an image folder
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]


@dataclass
class RawDataset:
    x: np.ndarray
    y: np.ndarray
    class_names: list[str]
    kind: str  # "image" or "tabular"
    feature_names: list[str] | None = None
    time: np.ndarray | None = None  # float64 per row (datetimes as epoch seconds)
    groups: np.ndarray | None = None  # entity id per row, as strings
    row_ids: np.ndarray | None = None  # row number in the source file; None = 0..N-1

    def ids(self) -> np.ndarray:
        return np.arange(len(self.y)) if self.row_ids is None else self.row_ids

    def take(self, rows: np.ndarray) -> RawDataset:
        """The given rows, with every per-row array (time, groups, ids) kept aligned."""
        return RawDataset(
            x=self.x[rows],
            y=self.y[rows],
            class_names=self.class_names,
            kind=self.kind,
            feature_names=self.feature_names,
            time=None if self.time is None else self.time[rows],
            groups=None if self.groups is None else self.groups[rows],
            row_ids=self.ids()[rows],
        )


def _read_idx(path: Path, offset: int) -> np.ndarray:
    with gzip.open(path, "rb") as handle:
        return np.frombuffer(handle.read(), dtype=np.uint8, offset=offset)


def load_fashion_mnist() -> RawDataset:
    """Both official files (60k + 10k), from Debian's ``dataset-fashion-mnist`` package."""
    if not FASHION_MNIST_DIR.exists():
        raise DatasetError(
            f"Fashion-MNIST not found at {FASHION_MNIST_DIR}; install it with "
            "`apt-get install -y dataset-fashion-mnist` (make setup does this) "
            "or use data.source=builtin:digits"
        )
    images, labels = [], []
    for prefix in ("train", "t10k"):
        images.append(_read_idx(FASHION_MNIST_DIR / f"{prefix}-images-idx3-ubyte.gz", 16))
        labels.append(_read_idx(FASHION_MNIST_DIR / f"{prefix}-labels-idx1-ubyte.gz", 8))
    x = np.concatenate(images).reshape(-1, 1, 28, 28).astype(np.float32)
    y = np.concatenate(labels).astype(np.int64)
    return RawDataset(x=x, y=y, class_names=list(FASHION_MNIST_CLASSES), kind="image")


def load_digits() -> RawDataset:
    """scikit-learn's bundled 8x8 digits (1,797 images): small enough for CI."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    x = bunch.images.reshape(-1, 1, 8, 8).astype(np.float32)
    y = bunch.target.astype(np.int64)
    return RawDataset(x=x, y=y, class_names=[str(c) for c in range(10)], kind="image")


def _load_npz(path: Path, shown: str) -> RawDataset:
    """``path`` is the local copy; errors name ``shown``, the source the user gave."""
    check_npz(path, shown)  # before numpy allocates what the headers declare
    try:
        with np.load(path, allow_pickle=False) as archive:
            if "x" not in archive or "y" not in archive:
                raise DatasetError(
                    f"{shown} must hold arrays 'x' and 'y'; it has {sorted(archive.files)}"
                )
            x, y = archive["x"], archive["y"]
            time = _time_values(archive["t"], f"{shown}: 't'") if "t" in archive else None
            groups = archive["groups"].astype(str) if "groups" in archive else None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        # a truncated or corrupted archive fails in zipfile or zlib, not only in numpy
        raise DatasetError(f"{shown} is not a readable .npz file: {exc}") from None
    x = _feature_array(x, shown)
    for name, values in (("t", time), ("groups", groups)):
        if values is not None and values.shape != (len(x),):
            raise DatasetError(
                f"{shown}: '{name}' must hold one value per row ({len(x)}), got {values.shape}"
            )
    return RawDataset(
        x=x.astype(np.float32),
        y=integer_labels(y, shown),
        class_names=[],
        kind="image" if x.ndim == 4 else "tabular",
        time=time,
        groups=groups,
    )


def _feature_array(x: np.ndarray, shown: str) -> np.ndarray:
    """``x`` as N x F (a table) or N x C x H x W (images; N x H x W gains C = 1)."""
    if np.iscomplexobj(x) or not np.issubdtype(x.dtype, np.number):
        raise DatasetError(
            f"{shown}: 'x' has dtype {x.dtype}; features must be real numbers (a complex "
            "value would lose its imaginary part)"
        )
    if x.ndim not in (2, 3, 4):
        raise DatasetError(
            f"{shown}: 'x' has shape {x.shape}; use N x F for a table, or N x H x W or "
            "N x C x H x W for images"
        )
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4 and x.shape[1] not in IMAGE_CHANNELS and x.shape[-1] in IMAGE_CHANNELS:
        raise DatasetError(
            f"{shown}: 'x' has shape {x.shape}, which looks channel-last (N x H x W x C); "
            "store images channel-first: x = np.moveaxis(x, -1, 1)"
        )
    return x


def _time_values(values: np.ndarray, where: str) -> np.ndarray:
    """Timestamps as float64: datetimes become epoch seconds, numbers stay as they are."""
    if np.issubdtype(values.dtype, np.datetime64):
        if np.isnat(values).any():
            raise DatasetError(f"{where} has missing timestamps; drop those rows")
        return values.astype("datetime64[ns]").astype(np.int64) / 1e9
    if np.iscomplexobj(values) or not np.issubdtype(values.dtype, np.number):
        raise DatasetError(f"{where} has dtype {values.dtype}; timestamps must be numbers or dates")
    out = values.astype(np.float64)
    if not np.isfinite(out).all():
        raise DatasetError(f"{where} has missing or infinite timestamps; drop those rows")
    return out


def _load_parquet(
    path: Path, shown: str, label_column: str, time_column: str | None, group_column: str | None
) -> RawDataset:
    """``path`` is the local copy; errors name ``shown``, the source the user gave."""
    import pyarrow.parquet as pq

    try:
        shape = pq.read_metadata(path)  # the footer only: rows and columns before the data
        cells = shape.num_rows * shape.num_columns
        check_fits_in_memory(shown, 8 * cells, cells)
        table = pq.read_table(path).to_pandas()
    except DatasetError:
        raise
    except Exception as exc:
        # pyarrow's message names the local copy, which the user never heard of
        problem = str(exc).replace(str(path), shown)
        raise DatasetError(f"{shown} is not a readable Parquet file: {problem}") from None
    return _table_dataset(table, shown, label_column, time_column, group_column)


def _csv_rows_agree(path: Path, shown: str) -> None:
    """Refuse a CSV whose rows do not all have as many fields as its header: pandas would
    fill a short row with NaN (a silent missing value) and fail on a long one without the
    file's name. Streams the file, so it costs no memory."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if not header:
                raise DatasetError(
                    f"{shown} is empty; a CSV needs a header row of column names, then one "
                    "row per example"
                )
            for row in reader:
                if row and len(row) != len(header):
                    raise DatasetError(
                        f"{shown}: line {reader.line_num} has {len(row)} fields, the header "
                        f"has {len(header)}; give every row one value per column (an empty "
                        "field for a missing value)"
                    )
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{shown} is not UTF-8 text: {exc}; save it as UTF-8") from None
    except csv.Error as exc:
        raise DatasetError(f"{shown} is not a readable CSV file: {exc}") from None


def _load_csv(
    path: Path, shown: str, label_column: str, time_column: str | None, group_column: str | None
) -> RawDataset:
    """``path`` is the local copy; errors name ``shown``, the source the user gave."""
    import pandas as pd

    size = path.stat().st_size
    check_fits_in_memory(shown, size, size // 2)  # a value takes two bytes at least: "1,"
    _csv_rows_agree(path, shown)
    try:
        table = pd.read_csv(path, encoding="utf-8")
    except Exception as exc:
        problem = str(exc).replace(str(path), shown)
        raise DatasetError(f"{shown} is not a readable CSV file: {problem}") from None
    roles = {label_column, time_column, group_column}
    for column in table.columns if label_column in table.columns else []:
        if column in roles or pd.api.types.is_numeric_dtype(table[column]):
            continue
        values = table[column]
        bad = values.notna() & pd.to_numeric(values, errors="coerce").isna()
        if bad.any():
            rows = np.flatnonzero(bad.to_numpy())
            raise DatasetError(
                f"{shown}: column '{column}' has {len(rows)} values that are not numbers "
                f"(first: {values.iloc[rows[0]]!r} in data row {rows[0] + 1}); fix them, or "
                "drop or encode the column"
            )
    return _table_dataset(table, shown, label_column, time_column, group_column)


def _table_dataset(
    table: pd.DataFrame,
    shown: str,
    label_column: str,
    time_column: str | None,
    group_column: str | None,
) -> RawDataset:
    """A Parquet or CSV table as features, labels and the optional time and group columns."""
    import pandas as pd

    if label_column not in table.columns:
        raise DatasetError(
            f"{shown} has no label column '{label_column}' (columns: {list(table.columns)}); "
            "set data.label_column"
        )
    for role, column in (("time_column", time_column), ("group_column", group_column)):
        if column is not None and column not in table.columns:
            raise DatasetError(
                f"{shown} has no column '{column}' (columns: {list(table.columns)}); "
                f"fix data.{role}"
            )
    time = None if time_column is None else _time_values(table[time_column].to_numpy(), shown)
    groups = None if group_column is None else table[group_column].astype(str).to_numpy()
    roles = [c for c in (label_column, time_column, group_column) if c is not None]
    features = table.drop(columns=roles)
    non_numeric = [
        c
        for c in features.columns
        if not pd.api.types.is_numeric_dtype(features[c])
        or pd.api.types.is_bool_dtype(features[c])
        or pd.api.types.is_complex_dtype(features[c])
    ]
    if non_numeric:
        raise DatasetError(
            f"{shown}: columns {non_numeric} are not real numbers; encode them before training"
        )
    y, class_names = _table_labels(table[label_column], shown)
    return RawDataset(
        x=features.to_numpy(dtype=np.float32, na_value=np.nan),
        y=y,
        class_names=class_names,
        kind="tabular",
        feature_names=[str(c) for c in features.columns],
        time=time,
        groups=groups,
    )


def _table_labels(column: pd.Series, where: str) -> tuple[np.ndarray, list[str]]:
    """Class ids and names of a table's label column. Strings name the classes: the sorted
    distinct strings are classes 0..K-1. Anything else must be integer class ids, unnamed."""
    import pandas as pd

    text = column.dtype == object or isinstance(column.dtype, pd.StringDtype)
    present = column.dropna()
    if not text or len(present) == 0 or not all(isinstance(v, str) for v in present):
        return integer_labels(column.to_numpy(), where), []
    missing = np.flatnonzero(column.isna().to_numpy())
    if len(missing):
        raise DatasetError(
            f"{where}: {len(missing)} rows have no label (rows {missing[:5].tolist()}); drop "
            "them or fill them in"
        )
    names = sorted(set(present.tolist()))
    ids = {name: i for i, name in enumerate(names)}
    return np.array([ids[v] for v in present.tolist()], dtype=np.int64), names


def integer_labels(y: np.ndarray, where: str) -> np.ndarray:
    if y.ndim != 1:
        raise DatasetError(f"{where}: labels must be one-dimensional, got shape {y.shape}")
    integral = np.issubdtype(y.dtype, np.integer) or (
        np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y)) and np.all(y == y // 1)
    )
    if not integral:
        raise DatasetError(
            f"{where}: labels must be integer class ids, got dtype {y.dtype}; encode them as 0..K-1"
        )
    # int64 cannot hold these: 2**64 - 1 would wrap to -1 and be reported as a negative label
    if y.size and float(np.abs(y.astype(np.float64)).max()) >= 2.0**63:
        raise DatasetError(
            f"{where}: label {y.max()} is not a class id; encode the labels as 0..K-1"
        )
    return y.astype(np.int64)


def is_image_folder(source: str) -> bool:
    """A local folder, or an s3:// prefix that ends with '/' or has no file suffix; a folder
    named like a data file (``x.npz/``) is read, and refused, as that file."""
    if storage.is_s3(source):
        return source.endswith("/") or not Path(source).suffix
    return Path(source).is_dir() and Path(source).suffix.lower() not in DATA_FILE_SUFFIXES


def load_image_folder(source: str, image: ImageConfig) -> RawDataset:
    """One subfolder per class (see graft.data.image_folder); an s3:// prefix is downloaded."""
    shown = source.rstrip("/")
    if not storage.is_s3(source):
        x, y, classes = read_image_folder(Path(source), shown, image)
        return RawDataset(x=x, y=y, class_names=classes, kind="image")
    with tempfile.TemporaryDirectory(prefix="graft-images-") as tmp:
        local = storage.download_tree(source, Path(tmp) / "images")
        x, y, classes = read_image_folder(local, shown, image)
    return RawDataset(x=x, y=y, class_names=classes, kind="image")


def load_source(
    source: str,
    label_column: str,
    time_column: str | None = None,
    group_column: str | None = None,
    image: ImageConfig | None = None,
) -> RawDataset:
    """Dispatch on the source string; see ``DataConfig.source``.

    ``time_column`` / ``group_column`` name Parquet/CSV columns that are taken out of the
    features; an .npz carries the same roles as optional arrays ``t`` and ``groups``.
    """
    if source == "builtin:digits":
        return load_digits()
    if source == "builtin:fashion_mnist":
        return load_fashion_mnist()
    if source.startswith("builtin:"):
        raise DatasetError(
            f"unknown built-in dataset '{source}'; use builtin:digits or builtin:fashion_mnist"
        )
    if is_image_folder(source):
        return load_image_folder(source, image or ImageConfig())
    if not storage.is_s3(source) and not Path(source).suffix and not Path(source).exists():
        raise DatasetError(
            f"{source} does not exist; give an image folder (one subfolder per class) or a "
            ".npz, .parquet or .csv file"
        )
    # '?' and '#' belong to the file or object name: neither a local path nor an s3:// key has
    # a query string
    suffix = Path(source).suffix.lower()
    if suffix not in (".npz", ".parquet", ".csv"):
        raise DatasetError(f"cannot read '{source}': supported formats are .npz, .parquet and .csv")
    with tempfile.TemporaryDirectory(prefix="graft-data-") as tmp:
        try:
            local = storage.download(source, Path(tmp) / f"data{suffix}")
        except (OSError, ValueError) as exc:  # a folder, no permission, a NUL in the path
            raise DatasetError(f"cannot read {source}: {exc}") from None
        if suffix == ".npz":
            return _load_npz(local, source)
        if suffix == ".csv":
            return _load_csv(local, source, label_column, time_column, group_column)
        return _load_parquet(local, source, label_column, time_column, group_column)
