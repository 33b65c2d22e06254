"""A stage's folders through S3 (``ray.staging_uri``), against a real S3 server (SeaweedFS).

The caller's side (upload the inputs, download the output) and the cluster's side
(``localized``: download, run, upload) are run here in turn, as a Ray job or a RayJob would
run them on two machines that share nothing but the bucket.
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from graft.config import load_config
from graft.errors import ConfigError, StorageError
from graft.io import storage
from graft.io.ray_runtime import TrainStorage, ensure_ray, shutdown_ray, train_storage
from graft.remote.command import StageInputs
from graft.remote.dispatch import check_cluster_can_track
from graft.remote.staging import download_output, localized, publish_result, upload_inputs
from servers import S3_ACCESS_KEY, S3_SECRET_KEY

RUN = "0a1b2c3d4e5f60718293a4b5c6d7e8f9"


@pytest.fixture
def bucket(s3_env: str) -> str:
    name = "graft-staging"
    client = boto3.session.Session().client("s3", endpoint_url=s3_env)
    if name not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
        client.create_bucket(Bucket=name)
    return f"s3://{name}/stages"


@pytest.fixture(scope="module")
def ray_with_s3_keys(s3_server: str) -> Iterator[None]:
    """A local Ray whose processes hold the S3 keys in their environment, as the Ray pods do
    from their Secret: the storage filesystem Train and Tune pickle for their workers carries
    no keys (it would put them into tuner.pkl), so the workers read their own."""
    keys = {
        "AWS_ENDPOINT_URL": s3_server,
        "AWS_ACCESS_KEY_ID": S3_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY,
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    saved = {key: os.environ.get(key) for key in keys}
    os.environ.update(keys)
    ensure_ray(load_config(preset="tiny").ray)
    try:
        yield
    finally:
        shutdown_ray()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _folder(root: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(text)
    return root


def test_a_stage_on_another_machine_reads_its_inputs_and_returns_its_output_through_s3(
    bucket: str, tmp_path: Path
) -> None:
    caller = StageInputs(
        dataset_dir=str(_folder(tmp_path / "dataset", {"train.npz": "T", "split/val.json": "V"})),
        output_dir=str(tmp_path / "finetuned"),
        parent_run_id=RUN,
        pretrained_dir=str(_folder(tmp_path / "pretrained", {"model.pt": "W"})),
    )

    remote = upload_inputs(caller, bucket, "transfer-finetune")

    prefix = f"{bucket}/{RUN}/transfer-finetune"
    assert remote.dataset_dir == f"{prefix}/inputs/dataset"
    assert remote.pretrained_dir == f"{prefix}/inputs/pretrained"
    assert remote.output_dir == f"{prefix}/output"
    assert remote.finetuned_dir == ""  # nothing to stage

    # the cluster's side: only the S3 URIs travel (in the job's entrypoint)
    with localized(remote) as here:
        assert not storage.is_s3(here.dataset_dir)
        assert (Path(here.dataset_dir) / "split" / "val.json").read_text() == "V"
        assert (Path(here.pretrained_dir) / "model.pt").read_text() == "W"
        model_dir = Path(here.output_dir) / "model"
        _folder(model_dir, {"model.pt": "tuned", "spec.json": "{}"})
        answer = {"model_dir": str(model_dir), "run_id": "r1", "val_accuracy": 0.9}
    published = publish_result(answer, remote, here)
    assert published["model_dir"] == f"{prefix}/output/model"
    result_line = json.loads(json.dumps(published))  # what crosses the job's log

    # the caller's side again
    result = download_output(remote, caller, result_line)

    assert result == {
        "model_dir": str(tmp_path / "finetuned" / "model"),
        "run_id": "r1",
        "val_accuracy": 0.9,
    }
    assert (tmp_path / "finetuned" / "model" / "model.pt").read_text() == "tuned"


def test_an_output_is_not_uploaded_when_the_stage_fails(bucket: str, tmp_path: Path) -> None:
    caller = StageInputs(
        str(_folder(tmp_path / "dataset", {"train.npz": "T"})), str(tmp_path / "out"), RUN
    )
    remote = upload_inputs(caller, bucket, "pretrain")
    with pytest.raises(RuntimeError, match="diverged"), localized(remote) as here:
        _folder(Path(here.output_dir), {"model.pt": "half-trained"})
        raise RuntimeError("loss diverged")
    with pytest.raises(StorageError, match="holds no files"):
        download_output(remote, caller, {})


def test_an_unwritable_staging_bucket_fails_before_anything_starts(
    bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    caller = StageInputs(str(_folder(tmp_path / "d", {"a": "1"})), str(tmp_path / "o"), RUN)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-key")
    with pytest.raises(
        StorageError, match=r"S3 refused access to s3://graft-staging/.*credentials"
    ):
        upload_inputs(caller, bucket, "pretrain")


def test_a_stage_run_elsewhere_needs_a_tracking_server() -> None:
    staged = load_config(preset="tiny", overrides=["ray.staging_uri=s3://b/p"])
    with pytest.raises(ConfigError, match=r"tracking.tracking_uri=http://"):
        check_cluster_can_track(staged)
    served = load_config(
        preset="tiny",
        overrides=["ray.staging_uri=s3://b/p", "tracking.tracking_uri=http://mlflow:5000"],
    )
    check_cluster_can_track(served)  # no error
    check_cluster_can_track(load_config(preset="tiny"))  # local: SQLite is fine


def test_train_storage_is_the_configured_shared_location() -> None:
    local = train_storage(load_config().ray, Path("work/ray"))
    assert local.filesystem is None and Path(local.path).is_absolute()
    staged = load_config(overrides=["ray.staging_uri=s3://b/stages"]).ray
    assert staged.shared_train_storage == "s3://b/stages/ray"  # the staging bucket's /ray
    mounted = load_config(overrides=["ray.storage_uri=/mnt/shared/ray"]).ray
    assert train_storage(mounted, Path("unused")) == TrainStorage("/mnt/shared/ray")
    with pytest.raises(ConfigError, match=r"ray.storage_uri 'shared/ray' must be s3://"):
        load_config(overrides=["ray.storage_uri=shared/ray"])


def test_s3_train_storage_tells_which_checkpoint_files_are_left(
    bucket: str, tmp_path: Path
) -> None:
    """What the tune stage asks before handing on a trial's checkpoint (existing_best)."""
    store = train_storage(load_config(overrides=[f"ray.storage_uri={bucket}/has"]).ray, tmp_path)
    assert store.filesystem is not None  # S3, not the local fallback
    published = store.publish(_folder(tmp_path / "ckpt", {"model.pt": "w"}), "trial/ckpt")
    assert store.has_file(published, "model.pt")
    assert not store.has_file(published, "spec.json")
    assert not store.has_file(store.join("trial/rotated-out"), "model.pt")

    # Tune pickles this filesystem into tuner.pkl, in the bucket: the keys must not go with it
    # (the filesystem reads them from the environment, here and after it is unpickled)
    pickled = pickle.dumps(store.filesystem)
    for key in ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID"):
        assert os.environ[key].encode() not in pickled
    restored = pickle.loads(pickled)
    assert TrainStorage(store.path, restored).has_file(published, "model.pt")


@pytest.mark.ray
def test_ray_train_checkpoints_go_to_s3_storage_and_the_model_comes_back(
    ray_with_s3_keys: None, bucket: str, dataset: str, tmp_path: Path
) -> None:
    """What a multi-node cluster needs: every worker's checkpoints in one shared place."""
    from graft import stages

    config = load_config(
        preset="tiny",
        overrides=[
            f"ray.storage_uri={bucket}/train",
            "pretrain.epochs=2",
            f"work_dir={tmp_path / 'work'}",
        ],
    )
    out = tmp_path / "pretrained"
    result = stages.pretrain.run(config, dataset, str(out), "f00dcafef00dcafef00dcafef00dcafe")

    assert result.epochs_run == 2
    assert (out / "model.pt").is_file()
    assert not (tmp_path / "work" / "ray").exists()  # nothing on the driver's disk
    name, prefix = bucket.removeprefix("s3://").split("/", 1)
    client = boto3.session.Session().client("s3", endpoint_url=storage.s3_endpoint())
    keys = [
        o["Key"] for o in client.list_objects_v2(Bucket=name, Prefix=f"{prefix}/train/")["Contents"]
    ]
    checkpoints = {k.split("/checkpoint_")[1].split("/")[0] for k in keys if "/checkpoint_" in k}
    assert checkpoints and any(k.endswith("/model.pt") for k in keys)


@pytest.mark.ray
@pytest.mark.slow
def test_a_search_keeps_its_experiment_and_trials_on_s3_and_hands_on_the_best_model(
    ray_with_s3_keys: None, bucket: str, dataset: str, tmp_path: Path, untrained_model_dir: Any
) -> None:
    """Tune's experiment state and every trial's checkpoints go to the shared storage (any
    node may run a trial); the driver fetches the best model from there."""
    from graft.io import tracking
    from graft.tune.search import run_search

    config = load_config(
        preset="tiny",
        overrides=[
            f"ray.storage_uri={bucket}/search",
            f"work_dir={tmp_path / 'work'}",
            "tune.num_samples=2",
            "tune.lr_finder.enabled=false",
        ],
    )
    pretrained = untrained_model_dir(config, Path(dataset), tmp_path / "pretrained")
    parent = tracking.start_pipeline_run(config, "test")
    result = run_search(config, dataset, str(pretrained), tmp_path / "out", parent, "s3-search")

    assert result.num_trials == 2
    assert (Path(result.best_checkpoint_dir) / "model.pt").is_file()
    assert not (tmp_path / "work" / "ray").exists()  # nothing on the driver's disk
    name, prefix = bucket.removeprefix("s3://").split("/", 1)
    client = boto3.session.Session().client("s3", endpoint_url=storage.s3_endpoint())
    pages = client.get_paginator("list_objects_v2").paginate(
        Bucket=name, Prefix=f"{prefix}/search/"
    )
    keys = [item["Key"] for page in pages for item in page.get("Contents", [])]
    assert any("/tune/s3-search/" in k for k in keys)  # Tune's experiment state
    tuner_state = [k for k in keys if k.endswith("/tuner.pkl")]
    assert tuner_state
    for key in tuner_state:  # the pickled experiment state holds no S3 key
        state = client.get_object(Bucket=name, Key=key)["Body"].read()
        assert S3_SECRET_KEY.encode() not in state and S3_ACCESS_KEY.encode() not in state
    # a one-worker trial trains in its Tune actor: Tune keeps its checkpoints in the
    # experiment (a Ray Train trial's Train run keeps them under /tune-trials/<experiment>/)
    marker = "/tune/s3-search/"
    trials = {k.split(marker)[1].split("/")[0] for k in keys if marker in k and "/checkpoint_" in k}
    assert len(trials) == 2 and any(k.endswith("/model.pt") for k in keys)
