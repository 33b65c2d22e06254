"""The data's digest on S3 (data-prep's cache key) from the listing of a real S3 server: the
same objects give the same digest; a rewritten, added or removed object another."""

from pathlib import Path

import boto3
import pytest

from graft.config import DataConfig
from graft.data.fingerprint import source_digest
from graft.errors import DatasetError

pytestmark = pytest.mark.timeout(120)


def test_an_s3_prefixs_digest_follows_its_objects(s3_env: str, tmp_path: Path) -> None:
    s3 = boto3.client("s3", endpoint_url=s3_env)
    s3.create_bucket(Bucket="graft-digest")
    s3.put_object(Bucket="graft-digest", Key="photos/cat/a.png", Body=b"one")
    s3.put_object(Bucket="graft-digest", Key="photos/dog/b.png", Body=b"two")
    folder = DataConfig(source="s3://graft-digest/photos/")
    first = source_digest(folder)
    assert source_digest(folder) == first
    s3.put_object(Bucket="graft-digest", Key="photos/dog/b.png", Body=b"TWO")
    rewritten = source_digest(folder)
    s3.put_object(Bucket="graft-digest", Key="photos/dog/c.png", Body=b"three")
    added = source_digest(folder)
    s3.delete_object(Bucket="graft-digest", Key="photos/cat/a.png")
    removed = source_digest(folder)
    assert len({first, rewritten, added, removed}) == 4

    s3.put_object(Bucket="graft-digest", Key="tables/week1.csv", Body=b"a,label\n1,x\n")
    table = DataConfig(source="s3://graft-digest/tables/week1.csv")
    before = source_digest(table)
    s3.put_object(Bucket="graft-digest", Key="tables/week1.csv", Body=b"a,label\n2,x\n")
    assert source_digest(table) != before
    with pytest.raises(DatasetError, match="s3://graft-digest/nothing/ holds no objects"):
        source_digest(DataConfig(source="s3://graft-digest/nothing/"))
