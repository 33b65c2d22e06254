"""User data from s3:// through boto3 against a real, authenticating S3 server."""

from pathlib import Path

import boto3
import pytest

from graft.config import DataConfig
from graft.data.prepare import prepare_dataset
from graft.errors import StorageError

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
