"""data.loader: streaming (issue 20): an image folder on a real S3 server (SeaweedFS) is
prepared into split manifests and trained from a Ray Data stream by 2 DDP workers."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from streaming_helpers import (
    assert_equal_disjoint_shards,
    row_hash,
    set_s3_environment,
    streaming_config,
    two_worker_fit,
    worker_shards,
)

from graft.config import GraftConfig
from graft.data.prepare import prepare_dataset
from graft.data.streaming_manifest import manifest_path
from graft.data.streaming_read import load_streamed_split
from graft.io.ray_runtime import ensure_ray, shutdown_ray
from graft.train.stage_requests import pretrain_request
from image_folders import digits_folder

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]

SOURCE = "s3://graft-stream/digits/"


@pytest.fixture(scope="module")
def streamed(s3_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The S3 settings in the environment before Ray starts (its workers and Ray Data's
    tasks inherit them), the folder uploaded, and data-prep's output for it."""
    root = tmp_path_factory.mktemp("streamed")
    with pytest.MonkeyPatch.context() as env:
        set_s3_environment(env, s3_server)
        folder = digits_folder(root / "digits", per_class=150)
        s3 = boto3.client("s3", endpoint_url=s3_server)
        s3.create_bucket(Bucket="graft-stream")
        for path in sorted(folder.rglob("*.png")):
            s3.upload_file(str(path), "graft-stream", f"digits/{path.relative_to(folder)}")
        config = _config(root)
        prepare_dataset(config.data, config.seed, root / "dataset", root / "dataset-test")
        ensure_ray(config.ray)
        try:
            yield root
        finally:
            shutdown_ray()


def _config(root: Path, *overrides: str) -> GraftConfig:
    return streaming_config(root, SOURCE, *overrides)


def test_each_worker_streams_a_disjoint_shard_of_the_train_files_and_no_test_file(
    streamed: Path,
) -> None:
    dataset, holdout = streamed / "dataset", streamed / "dataset-test"
    config = _config(streamed, "pretrain.batch_size=1000", "pretrain.preflight_overfit_batch=false")
    request = pretrain_request(config, str(dataset), None)
    assert request.stream is not None and request.train_path.endswith(".manifest.parquet")
    ranks = worker_shards(request, streamed, "shards")
    splits = {
        name: Counter(row_hash(row) for row in load_streamed_split(path, dataset)[0])
        for name, path in (
            ("train", manifest_path(dataset, "source", "train")),
            ("val", manifest_path(dataset, "source", "val")),
            ("test", manifest_path(holdout, "source", "test")),
        )
    }
    assert not (dataset / "source" / "test.manifest.parquet").exists()  # sealed apart
    assert_equal_disjoint_shards(ranks, splits)


def test_two_worker_ddp_fit_trains_from_the_s3_stream(streamed: Path) -> None:
    config = _config(streamed, "pretrain.epochs=6", "pretrain.early_stopping.enabled=false")
    request = pretrain_request(config, str(streamed / "dataset"), None)  # preflight: a batch
    result = two_worker_fit(config, request, streamed, "streamed-fit", epochs=6)
    assert result.history[-1]["val_accuracy"] > 0.8  # 3 classes: chance is 1/3
