"""data.loader: streaming (issue 20): an image folder on a real S3 server (SeaweedFS) is
prepared into split manifests and trained from a Ray Data stream by 2 DDP workers."""

from __future__ import annotations

import hashlib
import json
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
from ray import cloudpickle

from graft.config import GraftConfig, WorkerResources, load_config
from graft.data.prepare import prepare_dataset
from graft.data.streaming_manifest import manifest_path, read_manifest
from graft.data.streaming_read import load_streamed_split
from graft.io.ray_runtime import TrainStorage, ensure_ray, shutdown_ray
from graft.train.fit import fit
from graft.train.model_dir import MODEL_FILE
from graft.train.request import FitRequest, FitRun
from graft.train.stage_requests import pretrain_request
from image_folders import digits_folder
from servers import S3_ACCESS_KEY, S3_SECRET_KEY

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]

SOURCE = "s3://graft-stream/digits/"
# the workers run this module's train loop without importing it (tests/ is not installed)
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def streamed(s3_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The S3 settings in the environment before Ray starts (its workers and Ray Data's
    tasks inherit them), the folder uploaded, and data-prep's output for it."""
    root = tmp_path_factory.mktemp("streamed")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ENDPOINT_URL", s3_server)
        env.setenv("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY)
        env.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY)
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
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
    return load_config(
        preset="tiny",
        overrides=[
            f"work_dir={root}",
            f"data.source={SOURCE}",
            "data.loader=streaming",
            "data.streaming.shuffle_buffer=64",
            "pretrain.batch_size=16",
            "pretrain.resources.cpus=0.5",  # a CPU stays free for Ray Data's decoding tasks
            *overrides,
        ],
    )


def _pixel_hashes(x: np.ndarray) -> Counter[str]:
    return Counter(hashlib.sha256(row.astype(np.float32).tobytes()).hexdigest() for row in x)


def _record_shards(payload: dict[str, Any]) -> None:
    """A train loop that reads Graft's worker streams for one epoch and writes, per rank,
    the pixel hashes of every example it received."""
    import ray.train

    from graft.train.stream_data import WorkerStreams

    request = FitRequest.model_validate_json(payload["request_json"])
    context = ray.train.get_context()
    streams = WorkerStreams.of(request, context.get_world_size())
    assert streams is not None
    seen = {split: [] for split in ("train", "val")}
    for split, stream in (("train", streams.train), ("val", streams.val)):
        for xb, yb in stream:
            assert xb.dtype.is_floating_point and yb.dtype.is_signed
            seen[split].extend(
                hashlib.sha256(row.numpy().tobytes()).hexdigest() for row in xb.float()
            )
    out = Path(payload["out"]) / f"rank{context.get_world_rank()}.json"
    out.write_text(json.dumps(seen))


def test_each_worker_streams_a_disjoint_shard_of_the_train_files_and_no_test_file(
    streamed: Path,
) -> None:
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from graft.train.stream_data import stream_datasets

    dataset, holdout = streamed / "dataset", streamed / "dataset-test"
    config = _config(streamed, "pretrain.batch_size=1000", "pretrain.preflight_overfit_batch=false")
    request = pretrain_request(config, str(dataset), None)
    assert request.stream is not None and request.train_path.endswith(".manifest.parquet")
    TorchTrainer(
        _record_shards,
        train_loop_config={"request_json": request.model_dump_json(), "out": str(streamed)},
        datasets=stream_datasets(request),
        scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5}),
        run_config=RunConfig(name="shards", storage_path=str(streamed / "ray")),
    ).fit()
    ranks = [json.loads((streamed / f"rank{r}.json").read_text()) for r in (0, 1)]
    splits = {
        name: _pixel_hashes(load_streamed_split(path, dataset)[0])
        for name, path in (
            ("train", manifest_path(dataset, "source", "train")),
            ("val", manifest_path(dataset, "source", "val")),
            ("test", manifest_path(holdout, "source", "test")),
        )
    }
    assert not (dataset / "source" / "test.manifest.parquet").exists()  # sealed apart
    for split in ("train", "val"):
        shards = [Counter(rank[split]) for rank in ranks]
        total = sum(splits[split].values())
        # equal shards (DDP steps in lockstep); at most one row of an odd split left out
        assert sum(shards[0].values()) == sum(shards[1].values()) == total // 2
        assert not (shards[0] & shards[1])  # disjoint
        assert not (shards[0] + shards[1]) - splits[split]  # only this split's files
        assert not set(shards[0] + shards[1]) & set(splits["test"])  # never a test file


def test_two_worker_ddp_fit_trains_from_the_s3_stream(streamed: Path) -> None:
    config = _config(streamed, "pretrain.epochs=6", "pretrain.early_stopping.enabled=false")
    dataset = str(streamed / "dataset")
    request = pretrain_request(config, dataset, None)  # runs the preflight on a streamed batch
    train_rows = read_manifest(request.train_path).num_rows
    result = fit(
        request,
        FitRun(
            num_workers=2,
            resources=WorkerResources(cpus=0.5),
            storage=TrainStorage(str((streamed / "ray").resolve())),
            run_name="streamed-fit",
            output_dir=streamed / "model",
        ),
    )
    history = result.history
    assert [h["epoch"] for h in history] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert history[-1]["train_loss"] < 0.5 * history[0]["train_loss"]
    assert history[-1]["val_accuracy"] > 0.8  # 3 classes: chance is 1/3
    # whole global batches of both workers' equal shards, every epoch
    per_worker = train_rows // 2
    expected = (per_worker // config.pretrain.batch_size) * config.pretrain.batch_size * 2
    seen = [h["examples_seen"] for h in history]
    assert np.diff([0.0, *seen]).tolist() == [float(expected)] * 6
    assert (Path(result.model_dir) / MODEL_FILE).is_file()
    assert Path(result.checkpoint_path).is_dir()
