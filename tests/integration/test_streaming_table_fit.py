"""data.loader: streaming over Parquet (issue 20): a folder of Parquet files on a real S3 server
(SeaweedFS) is prepared into split manifests of rows, read back by row group through pyarrow's
S3 filesystem, and trained from a Ray Data stream by 2 DDP workers."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import boto3
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from streaming_helpers import (
    assert_equal_disjoint_shards,
    set_s3_environment,
    streaming_config,
    two_worker_fit,
    worker_shards,
)

from graft.config import GraftConfig
from graft.data.manifest import DataManifest
from graft.data.prepare import load_split, prepare_dataset
from graft.data.streaming_manifest import manifest_path, read_manifest
from graft.io.ray_runtime import ensure_ray, shutdown_ray
from graft.train.stage_requests import pretrain_request

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]

SOURCE = "s3://graft-table/rows/"
CLASSES = ["circle", "square", "triangle"]


def _frame(rows: int = 900) -> pd.DataFrame:
    """Three separable classes of 12 features, string labels."""
    rng = np.random.default_rng(0)
    y = np.arange(rows) % 3
    centers = rng.normal(size=(3, 12)) * 3
    x = (centers[y] + rng.normal(size=(rows, 12))).astype(np.float32)
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(12)])
    frame["label"] = np.array(CLASSES)[y]
    return frame


@pytest.fixture(scope="module")
def streamed(s3_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The S3 settings in the environment before Ray starts (its workers and Ray Data's
    tasks inherit them), three Parquet files uploaded, and data-prep's output for them."""
    root = tmp_path_factory.mktemp("table")
    with pytest.MonkeyPatch.context() as env:
        set_s3_environment(env, s3_server)
        s3 = boto3.client("s3", endpoint_url=s3_server)
        s3.create_bucket(Bucket="graft-table")
        frame = _frame()
        for index, part in enumerate(np.array_split(np.arange(len(frame)), 3)):
            local = root / f"part-{index}.parquet"
            table = pa.Table.from_pandas(frame.iloc[part], preserve_index=False)
            pq.write_table(table, local, row_group_size=64)
            s3.upload_file(str(local), "graft-table", f"rows/part-{index}.parquet")
        s3.put_object(Bucket="graft-table", Key="rows/_SUCCESS", Body=b"")  # not data
        config = _config(root)
        prepare_dataset(config.data, config.seed, root / "dataset", root / "dataset-test")
        ensure_ray(config.ray)
        try:
            yield root
        finally:
            shutdown_ray()


def _config(root: Path, *overrides: str) -> GraftConfig:
    return streaming_config(root, SOURCE, "data.split=random", *overrides)


def test_data_prep_lists_the_s3_rows_and_decodes_them_by_row_group(streamed: Path) -> None:
    dataset = streamed / "dataset"
    manifest = DataManifest.read(dataset)
    assert manifest.kind == "tabular" and manifest.input_shape == [12]
    assert manifest.tasks["source"].class_names == CLASSES
    listed = read_manifest(manifest_path(dataset, "source", "train")).to_pydict()
    assert all(uri.startswith(SOURCE) for uri in listed["uri"])
    x, y = load_split(dataset, "source", "train")  # through pyarrow's S3 filesystem
    assert x.dtype == np.float32 and x.shape == (len(listed["uri"]), 12)
    assert [hashlib.sha256(row.tobytes()).hexdigest() for row in x] == listed["sha256"]
    assert [CLASSES[label] for label in y.tolist()] == listed["label_key"]


def test_each_worker_streams_a_disjoint_shard_of_the_train_rows_and_no_test_row(
    streamed: Path,
) -> None:
    dataset, holdout = streamed / "dataset", streamed / "dataset-test"
    config = _config(streamed, "pretrain.batch_size=1000", "pretrain.preflight_overfit_batch=false")
    request = pretrain_request(config, str(dataset), None)
    assert request.stream is not None and request.stream.features is not None
    ranks = worker_shards(request, streamed, "table-shards")
    splits = {
        name: Counter(read_manifest(path).column("sha256").to_pylist())
        for name, path in (
            ("train", manifest_path(dataset, "source", "train")),
            ("val", manifest_path(dataset, "source", "val")),
            ("test", manifest_path(holdout, "source", "test")),
        )
    }
    assert_equal_disjoint_shards(ranks, splits)


def test_two_worker_ddp_fit_trains_from_the_parquet_stream(streamed: Path) -> None:
    config = _config(streamed, "pretrain.epochs=5", "pretrain.early_stopping.enabled=false")
    request = pretrain_request(config, str(streamed / "dataset"), None)  # preflight: a batch
    result = two_worker_fit(config, request, streamed, "table-fit", epochs=5)
    assert result.history[-1]["val_accuracy"] > 0.9  # separable classes; chance is 1/3
