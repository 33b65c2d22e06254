"""A digest of what ``data.source`` holds now: the pipeline's cache key for its data.

KFP caches a task by its inputs. Data-prep reads ``data.source`` by name, so on its own a
rerun on the same path would hit the cache after the data changed. The pipeline's first
(uncached) task computes this digest and hands it to data-prep as an input: the same bytes
give the same digest and a cache hit; any changed, added or removed file gives another.

Local files are hashed whole (data-prep reads them all anyway). On S3 the listing is enough:
each object's key, size and ETag, which S3 changes whenever the object is rewritten.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from graft.config import DataConfig
from graft.data.sources import FASHION_MNIST_DIR
from graft.errors import DatasetError
from graft.io import storage

_CHUNK = 1 << 20


def source_digest(data: DataConfig) -> str:
    """32 hex digits naming the contents of ``data.source`` (file, folder, prefix, built-in)."""
    source = data.source
    if source == "builtin:digits":
        # shipped inside scikit-learn: its version names its bytes
        import sklearn

        entries: list[tuple[str, int, str]] = [("digits", 0, sklearn.__version__)]
    elif source == "builtin:fashion_mnist":
        entries = _local_entries(FASHION_MNIST_DIR, source)
    elif storage.is_s3(source):
        entries = storage.s3_object_stamps(source)
        if not entries:
            raise DatasetError(f"{source} holds no objects; check the bucket and prefix")
    else:
        entries = _local_entries(Path(source), source)
    text = json.dumps({"source": source, "entries": entries}, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _local_entries(path: Path, shown: str) -> list[tuple[str, int, str]]:
    if path.is_file():
        return [("", path.stat().st_size, _file_sha256(path))]
    if not path.is_dir():
        raise DatasetError(
            f"{shown} does not exist; give an image folder (one subfolder per class) or a "
            ".npz, .parquet or .csv file"
        )
    files = sorted(p for p in path.rglob("*") if p.is_file())
    return [(f.relative_to(path).as_posix(), f.stat().st_size, _file_sha256(f)) for f in files]


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()
