"""data.streaming.cache_decoded: a streamed split that is kept decoded in Ray's object store is
read and decoded once, so a later epoch never opens its files again; an uncached split reads
(and hash-checks) every file every epoch; auto keeps what fits in a quarter of the store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from graft.config import load_config
from graft.data.prepare import prepare_dataset
from graft.train.request import FitRequest, StreamInputs
from graft.train.stage_requests import pretrain_request
from graft.train.stream_data import caches_decoded, decoded_bytes, stream_datasets
from image_folders import digits_folder

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]


def test_auto_keeps_what_fits_in_a_quarter_of_the_store() -> None:
    assert caches_decoded("auto", 100, 400)
    assert not caches_decoded("auto", 101, 400)
    assert caches_decoded("always", 10**12, 400)
    assert not caches_decoded("never", 1, 400)
    image = StreamInputs(input_shape=[3, 8, 8], rows={}, shuffle_buffer=1, max_pixels=1)
    table = StreamInputs(
        input_shape=[5], rows={}, shuffle_buffer=1, max_pixels=1, features=list("abcde")
    )
    assert decoded_bytes(image, 10) == 10 * (3 * 8 * 8 + 8)  # uint8 pixels, int64 labels
    assert decoded_bytes(table, 10) == 10 * (5 * 4 + 8)  # float32 features


def _request(root: Path, folder: Path, cache: str) -> FitRequest:
    config = load_config(
        preset="tiny",
        overrides=[
            f"work_dir={root / cache}",
            f"data.source={folder}",
            "data.loader=streaming",
            "data.transfer.target_classes=[]",
            f"data.streaming.cache_decoded={cache}",
        ],
    )
    dataset = root / cache / "dataset"
    prepare_dataset(config.data, config.seed, dataset)
    return pretrain_request(config, str(dataset), None)


def _train_labels(data: Any) -> list[int]:
    """One epoch of a split's dataset: its labels, sorted."""
    return sorted(int(y) for batch in data.iter_batches(batch_size=16) for y in batch["y"])


def test_a_cached_split_never_reads_its_files_again(ray_local: None, tmp_path: Path) -> None:
    folder = digits_folder(tmp_path / "digits", per_class=30)
    requests = {cache: _request(tmp_path, folder, cache) for cache in ("always", "never")}
    datasets = {cache: stream_datasets(r) for cache, r in requests.items()}
    first = {cache: _train_labels(d["train"]) for cache, d in datasets.items()}
    assert first["always"] == first["never"] and len(first["never"]) > 0

    # every file changes after the first epoch: a split read again would fail its hash check
    for path in folder.rglob("*.png"):
        Image.fromarray(np.full((8, 8), 7, dtype=np.uint8), "L").save(path)
    assert _train_labels(datasets["always"]["train"]) == first["always"]
    with pytest.raises(Exception, match="changed after data-prep listed it"):
        _train_labels(datasets["never"]["train"])


def test_auto_caches_a_small_split(ray_local: None, tmp_path: Path) -> None:
    folder = digits_folder(tmp_path / "digits", per_class=30)
    datasets = stream_datasets(_request(tmp_path, folder, "auto"))
    labels = _train_labels(datasets["train"])
    for path in folder.rglob("*.png"):
        path.unlink()  # a kept split needs none of them any more
    assert _train_labels(datasets["train"]) == labels
