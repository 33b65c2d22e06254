"""data.loader: streaming over Parquet (issue 20): a folder of Parquet files on a real S3 server
(SeaweedFS) is prepared into split manifests of rows, read back by row group through pyarrow's
S3 filesystem, and trained from a Ray Data stream by 2 DDP workers."""

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
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from ray import cloudpickle

from graft.config import GraftConfig, WorkerResources, load_config
from graft.data.manifest import DataManifest
from graft.data.prepare import load_split, prepare_dataset
from graft.data.streaming_manifest import manifest_path, read_manifest
from graft.io.ray_runtime import TrainStorage, ensure_ray, shutdown_ray
from graft.train.fit import fit
from graft.train.model_dir import MODEL_FILE
from graft.train.request import FitRequest, FitRun
from graft.train.stage_requests import pretrain_request
from servers import S3_ACCESS_KEY, S3_SECRET_KEY

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]

SOURCE = "s3://graft-table/rows/"
CLASSES = ["circle", "square", "triangle"]
# the workers run this module's train loop without importing it (tests/ is not installed)
cloudpickle.register_pickle_by_value(sys.modules[__name__])


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
        env.setenv("AWS_ENDPOINT_URL", s3_server)
        env.setenv("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY)
        env.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY)
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
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
    return load_config(
        preset="tiny",
        overrides=[
            f"work_dir={root}",
            f"data.source={SOURCE}",
            "data.loader=streaming",
            "data.split=random",
            "data.streaming.shuffle_buffer=64",
            "pretrain.batch_size=16",
            "pretrain.resources.cpus=0.5",  # a CPU stays free for Ray Data's decoding tasks
            *overrides,
        ],
    )


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


def _record_shards(payload: dict[str, Any]) -> None:
    """A train loop that reads Graft's worker streams for one epoch and writes, per rank,
    the content hash of every row it received."""
    import ray.train

    from graft.train.stream_data import WorkerStreams

    request = FitRequest.model_validate_json(payload["request_json"])
    context = ray.train.get_context()
    streams = WorkerStreams.of(request, context.get_world_size())
    assert streams is not None
    seen: dict[str, list[str]] = {split: [] for split in ("train", "val")}
    for split, stream in (("train", streams.train), ("val", streams.val)):
        for xb, _ in stream:
            rows = xb.float().numpy()
            seen[split].extend(hashlib.sha256(row.tobytes()).hexdigest() for row in rows)
    out = Path(payload["out"]) / f"rank{context.get_world_rank()}.json"
    out.write_text(json.dumps(seen))


def test_each_worker_streams_a_disjoint_shard_of_the_train_rows_and_no_test_row(
    streamed: Path,
) -> None:
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from graft.train.stream_data import stream_datasets

    dataset, holdout = streamed / "dataset", streamed / "dataset-test"
    config = _config(streamed, "pretrain.batch_size=1000", "pretrain.preflight_overfit_batch=false")
    request = pretrain_request(config, str(dataset), None)
    assert request.stream is not None and request.stream.features is not None
    TorchTrainer(
        _record_shards,
        train_loop_config={"request_json": request.model_dump_json(), "out": str(streamed)},
        datasets=stream_datasets(request),
        scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5}),
        run_config=RunConfig(name="table-shards", storage_path=str(streamed / "ray")),
    ).fit()
    ranks = [json.loads((streamed / f"rank{r}.json").read_text()) for r in (0, 1)]
    splits = {
        name: Counter(read_manifest(path).column("sha256").to_pylist())
        for name, path in (
            ("train", manifest_path(dataset, "source", "train")),
            ("val", manifest_path(dataset, "source", "val")),
            ("test", manifest_path(holdout, "source", "test")),
        )
    }
    for split in ("train", "val"):
        shards = [Counter(rank[split]) for rank in ranks]
        total = sum(splits[split].values())
        assert sum(shards[0].values()) == sum(shards[1].values()) == total // 2
        assert not (shards[0] & shards[1])  # disjoint
        assert not (shards[0] + shards[1]) - splits[split]  # only this split's rows
        assert not set(shards[0] + shards[1]) & set(splits["test"])  # never a test row


def test_two_worker_ddp_fit_trains_from_the_parquet_stream(streamed: Path) -> None:
    config = _config(streamed, "pretrain.epochs=5", "pretrain.early_stopping.enabled=false")
    request = pretrain_request(config, str(streamed / "dataset"), None)  # preflight: a batch
    train_rows = read_manifest(request.train_path).num_rows
    result = fit(
        request,
        FitRun(
            num_workers=2,
            resources=WorkerResources(cpus=0.5),
            storage=TrainStorage(str((streamed / "ray").resolve())),
            run_name="table-fit",
            output_dir=streamed / "model",
        ),
    )
    history = result.history
    assert [h["epoch"] for h in history] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert history[-1]["train_loss"] < 0.5 * history[0]["train_loss"]
    assert history[-1]["val_accuracy"] > 0.9  # separable classes; chance is 1/3
    per_worker = train_rows // 2
    expected = (per_worker // config.pretrain.batch_size) * config.pretrain.batch_size * 2
    seen = [h["examples_seen"] for h in history]
    assert np.diff([0.0, *seen]).tolist() == [float(expected)] * 5
    assert (Path(result.model_dir) / MODEL_FILE).is_file()
