"""Object keys are contained (issue 18): against a real, authenticating S3 server a key with
`#` or `?` round-trips whole, and a key that would land outside the download folder is
refused."""

from pathlib import Path

import boto3
import pytest

from graft.errors import StorageError
from graft.io import storage

pytestmark = pytest.mark.timeout(180)


def test_keys_with_hash_and_question_mark_round_trip(s3_env: str, tmp_path: Path) -> None:
    boto3.client("s3", endpoint_url=s3_env).create_bucket(Bucket="graft-keys")
    source = tmp_path / "model.pt"
    source.write_bytes(b"weights")
    uri = "s3://graft-keys/runs/a#1/b?v=2/model.pt"
    storage.upload(source, uri)
    listed = boto3.client("s3", endpoint_url=s3_env).list_objects_v2(Bucket="graft-keys")
    assert [item["Key"] for item in listed["Contents"]] == ["runs/a#1/b?v=2/model.pt"]
    assert storage.download(uri, tmp_path / "back.pt").read_bytes() == b"weights"
    tree = storage.download_tree("s3://graft-keys/runs/a#1", tmp_path / "tree")
    assert (tree / "b?v=2" / "model.pt").read_bytes() == b"weights"


@pytest.mark.parametrize("escaping", ["../outside.txt", "sub/../../outside.txt", "/etc/x"])
def test_a_key_that_would_write_outside_the_folder_is_refused(
    tmp_path: Path, escaping: str
) -> None:
    """AWS S3 stores such keys as they are; SeaweedFS (this machine's S3) refuses to store
    them, so download_tree's check is exercised on the function that maps each listed key
    to its file."""
    destination = tmp_path / "job" / "output"
    assert storage.contained_path(destination, "sub/a#1.txt", "s3://b/p") == (
        destination.resolve() / "sub" / "a#1.txt"
    )
    with pytest.raises(StorageError, match="would be written outside"):
        storage.contained_path(destination, escaping, "s3://b/p")


def test_seaweedfs_itself_refuses_keys_with_dot_dot(s3_env: str) -> None:
    """Why the test above does not plant the key on the server: the server says no."""
    s3 = boto3.client("s3", endpoint_url=s3_env)
    s3.create_bucket(Bucket="graft-dotdot")
    with pytest.raises(s3.exceptions.ClientError, match="InvalidRequest"):
        s3.put_object(Bucket="graft-dotdot", Key="stage/../outside.txt", Body=b"x")
