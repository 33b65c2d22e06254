"""User data from s3:// through boto3 against a real, authenticating S3 server."""

from pathlib import Path

import boto3
import numpy as np
import pytest

from graft.config import DataConfig
from graft.data.prepare import prepare_dataset
from graft.errors import DatasetError, StorageError
from image_folders import digits_folder

pytestmark = pytest.mark.timeout(180)


def test_prepare_reads_s3_npz(s3_env: str, tabular_npz: Path, tmp_path: Path) -> None:
    s3 = boto3.client("s3", endpoint_url=s3_env)
    s3.create_bucket(Bucket="graft-data")
    s3.upload_file(str(tabular_npz), "graft-data", "tables/train.npz")
    manifest = prepare_dataset(
        DataConfig(source="s3://graft-data/tables/train.npz"), 0, tmp_path / "out"
    )
    assert manifest.num_rows == 240
    assert manifest.kind == "tabular"
    assert manifest.input_shape == [6]


def test_prepare_reads_a_csv_with_named_labels_from_s3(s3_env: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    lines = ["radius,texture,diagnosis"]
    for row in range(120):
        label = "malignant" if row % 3 == 0 else "benign"
        lines.append(f"{rng.normal():.4f},{rng.normal() + (label == 'malignant'):.4f},{label}")
    csv = tmp_path / "tumours.csv"
    csv.write_text("\n".join(lines) + "\n")
    s3 = boto3.client("s3", endpoint_url=s3_env)
    s3.create_bucket(Bucket="graft-csv")
    s3.upload_file(str(csv), "graft-csv", "clinic/tumours.csv")
    manifest = prepare_dataset(
        DataConfig(source="s3://graft-csv/clinic/tumours.csv", label_column="diagnosis"),
        0,
        tmp_path / "out",
    )
    assert (manifest.num_rows, manifest.kind, manifest.input_shape) == (120, "tabular", [2])
    assert manifest.tasks["target"].class_names == ["benign", "malignant"]


def test_prepare_reads_an_image_folder_from_s3(s3_env: str, tmp_path: Path) -> None:
    root = digits_folder(tmp_path / "digits", per_class=40)
    s3 = boto3.client("s3", endpoint_url=s3_env)
    s3.create_bucket(Bucket="graft-images")
    for path in sorted(root.rglob("*.png")):
        s3.upload_file(str(path), "graft-images", f"scans/{path.relative_to(root).as_posix()}")
    manifest = prepare_dataset(DataConfig(source="s3://graft-images/scans/"), 0, tmp_path / "out")
    assert (manifest.num_rows, manifest.kind, manifest.input_shape) == (120, "image", [1, 8, 8])
    assert manifest.tasks["target"].class_names == ["one", "two", "zero"]
    s3.put_object(Bucket="graft-images", Key="scans/two/broken.png", Body=b"not a png")
    with pytest.raises(DatasetError) as refused:
        prepare_dataset(DataConfig(source="s3://graft-images/scans/"), 0, tmp_path / "again")
    assert str(refused.value).startswith(
        "s3://graft-images/scans/two/broken.png is not a readable image"
    )


def test_missing_key_and_wrong_credentials_are_clear(
    s3_env: str, tabular_npz: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3 = boto3.client("s3", endpoint_url=s3_env)
    s3.create_bucket(Bucket="graft-auth")
    s3.upload_file(str(tabular_npz), "graft-auth", "present.npz")
    with pytest.raises(StorageError, match="does not exist"):
        prepare_dataset(DataConfig(source="s3://graft-auth/absent.npz"), 0, tmp_path / "a")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    with pytest.raises(StorageError, match="refused access"):
        prepare_dataset(DataConfig(source="s3://graft-auth/present.npz"), 0, tmp_path / "b")


def test_run_artifacts_and_registered_models_live_on_s3(s3_env: str, tmp_path: Path) -> None:
    import mlflow
    import mlflow.pytorch
    import torch

    from graft.config import load_config
    from graft.io import tracking

    s3 = boto3.client("s3", endpoint_url=s3_env)
    s3.create_bucket(Bucket="graft-mlflow")
    config = load_config(
        preset="tiny",
        overrides=[
            f"work_dir={tmp_path}",
            f"tracking.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
            "tracking.experiment_name=on-s3",
            "tracking.artifact_location=s3://graft-mlflow/experiments/on-s3",
        ],
    )
    parent = tracking.start_pipeline_run(config, "s3-test")  # logs config/resolved.json
    model = torch.nn.Linear(4, 2)
    mlflow.set_tracking_uri(config.resolved_tracking_uri())
    mlflow.set_registry_uri(config.resolved_tracking_uri())
    with mlflow.start_run(run_id=parent):
        info = mlflow.pytorch.log_model(
            model, name="model", registered_model_name="graft-s3", serialization_format="pickle"
        )
    keys = [
        o["Key"]
        for o in s3.list_objects_v2(Bucket="graft-mlflow", Prefix="experiments/on-s3/")["Contents"]
    ]
    assert any(key.endswith(f"{parent}/artifacts/config/resolved.json") for key in keys)
    assert any(key.endswith("MLmodel") for key in keys)
    assert not (tmp_path / "mlartifacts").exists()  # nothing fell back to local disk
    loaded = mlflow.pytorch.load_model(f"models:/graft-s3/{info.registered_model_version}")
    probe = torch.randn(3, 4)
    assert torch.equal(loaded(probe), model(probe))
    # a later run of the same experiment keeps writing there
    assert (
        tracking.client_for(config).get_experiment(tracking.experiment_id(config)).artifact_location
        == "s3://graft-mlflow/experiments/on-s3"
    )


def test_the_test_s3_server_holds_objects_in_more_buckets_than_its_disk_would_guess(
    s3_env: str,
) -> None:
    """Each bucket takes a volume of its own: with the volume count left to SeaweedFS (free
    disk / 1 GiB), a runner with ~20 GB free refused a PutObject in the suite's ~25th bucket."""
    s3 = boto3.client("s3", endpoint_url=s3_env)
    buckets = [f"graft-many-{index}" for index in range(60)]
    created: list[str] = []
    try:
        for bucket in buckets:
            s3.create_bucket(Bucket=bucket)
            created.append(bucket)
            s3.put_object(Bucket=bucket, Key="one", Body=b"one object")
        assert [s3.get_object(Bucket=b, Key="one")["Body"].read() for b in buckets] == [
            b"one object"
        ] * len(buckets)
    finally:
        for bucket in created:  # the other tests' buckets get the volumes back
            s3.delete_object(Bucket=bucket, Key="one")
            s3.delete_bucket(Bucket=bucket)
