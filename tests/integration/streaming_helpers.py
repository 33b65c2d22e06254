"""What the two streaming integration tests (an image folder, Parquet files; both on
SeaweedFS) share: the S3 settings Ray must inherit, the config, a train loop that records each
worker's shard, the shard checks and the 2-worker fit."""

from __future__ import annotations

import hashlib
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ray import cloudpickle

from graft.config import GraftConfig, WorkerResources, load_config
from graft.data.streaming_manifest import read_manifest
from graft.io.ray_runtime import TrainStorage
from graft.train.fit import FitResult, fit
from graft.train.model_dir import MODEL_FILE
from graft.train.request import FitRequest, FitRun
from servers import S3_ACCESS_KEY, S3_SECRET_KEY

# the workers run this module's train loop without importing it (tests/ is not installed)
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def set_s3_environment(env: pytest.MonkeyPatch, s3_server: str) -> None:
    """Before Ray starts: its workers and Ray Data's tasks inherit these."""
    env.setenv("AWS_ENDPOINT_URL", s3_server)
    env.setenv("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY)
    env.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY)
    env.setenv("AWS_DEFAULT_REGION", "us-east-1")


def streaming_config(root: Path, source: str, *overrides: str) -> GraftConfig:
    return load_config(
        preset="tiny",
        overrides=[
            f"work_dir={root}",
            f"data.source={source}",
            "data.loader=streaming",
            "data.streaming.shuffle_buffer=64",
            # every epoch streams from S3 (auto would keep these small splits decoded in the
            # object store: tests/integration/test_streaming_cache.py)
            "data.streaming.cache_decoded=never",
            "pretrain.batch_size=16",
            "pretrain.resources.cpus=0.5",  # a CPU stays free for Ray Data's decoding tasks
            *overrides,
        ],
    )


def row_hash(row: np.ndarray) -> str:
    return hashlib.sha256(row.astype(np.float32).tobytes()).hexdigest()


def record_shards(payload: dict[str, Any]) -> None:
    """A train loop that reads Graft's worker streams for one epoch and writes, per rank, the
    hash of every example it received."""
    import ray.train

    from graft.train.stream_data import WorkerStreams

    request = FitRequest.model_validate_json(payload["request_json"])
    context = ray.train.get_context()
    streams = WorkerStreams.of(request, context.get_world_size())
    assert streams is not None
    seen: dict[str, list[str]] = {split: [] for split in ("train", "val")}
    for split, stream in (("train", streams.train), ("val", streams.val)):
        for xb, yb in stream:
            assert xb.dtype.is_floating_point and yb.dtype.is_signed
            seen[split].extend(row_hash(row) for row in xb.float().numpy())
    out = Path(payload["out"]) / f"rank{context.get_world_rank()}.json"
    out.write_text(json.dumps(seen))


def worker_shards(request: FitRequest, root: Path, name: str) -> list[dict[str, list[str]]]:
    """Each of 2 workers' examples, by split, as :func:`record_shards` saw them."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from graft.train.stream_data import stream_datasets

    TorchTrainer(
        record_shards,
        train_loop_config={"request_json": request.model_dump_json(), "out": str(root)},
        datasets=stream_datasets(request),
        scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5}),
        run_config=RunConfig(name=name, storage_path=str(root / "ray")),
    ).fit()
    return [json.loads((root / f"rank{rank}.json").read_text()) for rank in (0, 1)]


def assert_equal_disjoint_shards(
    ranks: list[dict[str, list[str]]], splits: dict[str, Counter[str]]
) -> None:
    for split in ("train", "val"):
        shards = [Counter(rank[split]) for rank in ranks]
        total = sum(splits[split].values())
        # equal shards (DDP steps in lockstep); at most one row of an odd split left out
        assert sum(shards[0].values()) == sum(shards[1].values()) == total // 2
        assert not (shards[0] & shards[1])  # disjoint
        assert not (shards[0] + shards[1]) - splits[split]  # only this split's examples
        assert not set(shards[0] + shards[1]) & set(splits["test"])  # never a test example


def two_worker_fit(
    config: GraftConfig, request: FitRequest, root: Path, name: str, epochs: int
) -> FitResult:
    """A 2-worker DDP fit from the stream, checked epoch by epoch: every epoch whole global
    batches of both workers' equal shards, the loss halved, a model and a checkpoint saved."""
    train_rows = read_manifest(request.train_path).num_rows
    result = fit(
        request,
        FitRun(
            num_workers=2,
            resources=WorkerResources(cpus=0.5),
            storage=TrainStorage(str((root / "ray").resolve())),
            run_name=name,
            output_dir=root / "model",
        ),
    )
    history = result.history
    assert [h["epoch"] for h in history] == [float(e) for e in range(1, epochs + 1)]
    assert history[-1]["train_loss"] < 0.5 * history[0]["train_loss"]
    batch = config.pretrain.batch_size
    expected = ((train_rows // 2) // batch) * batch * 2
    seen = [h["examples_seen"] for h in history]
    assert np.diff([0.0, *seen]).tolist() == [float(expected)] * epochs
    assert (Path(result.model_dir) / MODEL_FILE).is_file()
    assert Path(result.checkpoint_path).is_dir()
    return result
