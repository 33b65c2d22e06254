"""Local paths and ``s3://`` URIs behind one small interface (boto3 for S3).

Credentials and the endpoint come from the environment only (AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL or MLFLOW_S3_ENDPOINT_URL), never from config.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from graft.config.runtime import AWS_REGION_ENV, DEFAULT_AWS_REGION, S3_ENDPOINT_ENVS
from graft.errors import StorageError


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def split_s3_uri(uri: str) -> tuple[str, str]:
    """(bucket, key). The key is everything after the bucket, ``#`` and ``?`` included: an S3
    key may hold them, and a URL parser would cut the key there."""
    if not uri.startswith("s3://"):
        raise StorageError(f"'{uri}' is not an s3://bucket/key URI")
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket:
        raise StorageError(f"'{uri}' is not an s3://bucket/key URI")
    return bucket, key.lstrip("/")


def s3_endpoint() -> str | None:
    first, fallback = S3_ENDPOINT_ENVS
    return os.environ.get(first) or os.environ.get(fallback)


def s3_client() -> Any:
    import boto3
    from botocore.config import Config

    # a fresh session reads the environment now (boto3's default session caches credentials)
    return boto3.session.Session().client(
        "s3",
        endpoint_url=s3_endpoint(),
        config=Config(retries={"max_attempts": 2}, connect_timeout=5, read_timeout=30),
    )


def _describe_s3_failure(uri: str, exc: Exception) -> StorageError:
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

    endpoint = s3_endpoint() or "the default AWS endpoint"
    if isinstance(exc, EndpointConnectionError):
        return StorageError(
            f"cannot reach S3 at {endpoint} for {uri}; check AWS_ENDPOINT_URL and the network"
        )
    if isinstance(exc, NoCredentialsError):
        return StorageError(
            f"no S3 credentials for {uri}; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        )
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "?")
        if code in ("404", "NoSuchKey", "NoSuchBucket"):
            return StorageError(f"{uri} does not exist ({code}); check the bucket and key")
        if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return StorageError(f"S3 refused access to {uri} ({code}); check the credentials")
        return StorageError(f"S3 error {code} for {uri}")
    return StorageError(f"S3 failure for {uri}: {exc}")


def download(uri: str, dest: Path) -> Path:
    """Copy ``uri`` (local path or s3://) to ``dest`` and return ``dest``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if is_s3(uri):
        bucket, key = split_s3_uri(uri)
        try:
            s3_client().download_file(bucket, key, str(dest))
        except Exception as exc:
            raise _describe_s3_failure(uri, exc) from None
        return dest
    source = Path(uri)
    if not source.exists():
        raise StorageError(f"{uri} does not exist; pass an existing file or an s3:// URI")
    shutil.copyfile(source, dest)
    return dest


def read_bytes(uri: str, client: Any = None) -> bytes:
    """The whole content of one file (local path or s3://), without a local copy. A caller
    reading many objects passes one ``client`` (:func:`s3_client`) for all of them."""
    if not is_s3(uri):
        try:
            return Path(uri).read_bytes()
        except OSError as exc:
            raise StorageError(f"cannot read {uri}: {exc.strerror or exc}") from None
    bucket, key = split_s3_uri(uri)
    try:
        body = (client or s3_client()).get_object(Bucket=bucket, Key=key)["Body"]
        return bytes(body.read())
    except Exception as exc:
        raise _describe_s3_failure(uri, exc) from None


def arrow_input_file(uri: str) -> Any:
    """``uri`` (local path or s3://) as a pyarrow random-access file, so a Parquet reader
    fetches the footer and the row groups it asks for, not the whole object.

    The S3 endpoint is :func:`s3_endpoint`'s; no keys are passed: pyarrow's AWS SDK reads
    them from the same environment boto3 does, and a filesystem holding them would carry
    the secret into whatever pickles it."""
    from pyarrow import fs

    try:
        if not is_s3(uri):
            return fs.LocalFileSystem().open_input_file(uri)
        bucket, key = split_s3_uri(uri)
        return fs.S3FileSystem(**arrow_s3_options()).open_input_file(f"{bucket}/{key}")
    except OSError as exc:
        raise StorageError(f"cannot read {uri}: {exc}") from None


def arrow_s3_options() -> dict[str, Any]:
    """pyarrow.fs.S3FileSystem's endpoint and region, from the environment boto3 reads.

    No keys: pyarrow's AWS SDK reads them from the same environment (then an instance profile,
    IRSA). Keys given here would be pickled with the filesystem, and Tune pickles it into
    ``tuner.pkl`` in the shared bucket, where anyone who can read the bucket would find them."""
    from urllib.parse import urlparse

    options: dict[str, Any] = {"region": os.environ.get(AWS_REGION_ENV, DEFAULT_AWS_REGION)}
    endpoint = s3_endpoint()
    if endpoint:
        parsed = urlparse(endpoint)
        options["endpoint_override"] = parsed.netloc or parsed.path
        options["scheme"] = parsed.scheme or "https"
    return options


def list_s3_keys(uri: str) -> list[str]:
    """Every object key under the ``uri`` prefix, relative to it and sorted; folder markers
    (keys ending with ``/``) left out."""
    bucket, prefix = split_s3_uri(uri)
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    try:
        pages = s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        keys = [item["Key"] for page in pages for item in page.get("Contents", [])]
    except Exception as exc:
        raise _describe_s3_failure(uri, exc) from None
    return sorted(k[len(prefix) :] for k in keys if k[len(prefix) :] and not k.endswith("/"))


def s3_object_stamps(uri: str) -> list[tuple[str, int, str]]:
    """(key relative to ``uri``, size, ETag) of the object ``uri`` or, for a prefix, of every
    object under it, sorted: what a snapshot holds, read from the listing alone (no bytes)."""
    from botocore.exceptions import ClientError

    bucket, key = split_s3_uri(uri)
    client = s3_client()
    try:
        if key and not key.endswith("/"):
            try:
                head = client.head_object(Bucket=bucket, Key=key)
                return [("", int(head["ContentLength"]), str(head["ETag"]))]
            except ClientError as exc:  # no such object: a prefix without its trailing '/'
                if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey"):
                    raise
        prefix = key.rstrip("/") + "/" if key else ""
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        items = [item for page in pages for item in page.get("Contents", [])]
    except Exception as exc:
        raise _describe_s3_failure(uri, exc) from None
    return sorted(
        (item["Key"][len(prefix) :], int(item["Size"]), str(item["ETag"]))
        for item in items
        if item["Key"][len(prefix) :] and not item["Key"].endswith("/")
    )


def upload(path: Path, uri: str) -> str:
    """Copy a local file to ``uri`` (local path or s3://)."""
    if is_s3(uri):
        bucket, key = split_s3_uri(uri)
        try:
            s3_client().upload_file(str(path), bucket, key)
        except Exception as exc:
            raise _describe_s3_failure(uri, exc) from None
        return uri
    target = Path(uri)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, target)
    return uri


def upload_tree(local_dir: Path, uri: str) -> str:
    """Copy every file under ``local_dir`` to the same relative keys under ``uri``.

    Keys already under ``uri`` that ``local_dir`` lacks are left alone: a retried upload of
    the same folder rewrites the same keys."""
    if not local_dir.is_dir():
        raise StorageError(f"{local_dir} is not a folder; nothing to upload to {uri}")
    for path in sorted(p for p in local_dir.rglob("*") if p.is_file()):
        upload(path, join_uri(uri, path.relative_to(local_dir).as_posix()))
    return uri


def download_tree(uri: str, local_dir: Path) -> Path:
    """Copy every object under the ``uri`` prefix into ``local_dir`` (folders as needed)."""
    if not is_s3(uri):
        source = Path(uri)
        if not source.is_dir():
            raise StorageError(f"{uri} is not a folder")
        shutil.copytree(source, local_dir, dirs_exist_ok=True)
        return local_dir
    bucket, prefix = split_s3_uri(uri)
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    try:
        client = s3_client()
        keys = [
            item["Key"]
            for page in client.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=prefix
            )
            for item in page.get("Contents", [])
        ]
    except Exception as exc:
        raise _describe_s3_failure(uri, exc) from None
    # every target is checked before the first download: a refused listing writes nothing
    targets = {
        key: contained_path(local_dir, key[len(prefix) :], uri)
        for key in keys
        if key[len(prefix) :] and not key.endswith("/")  # not the prefix or a folder marker
    }
    if not targets:
        raise StorageError(f"{uri} holds no files; check the prefix (a folder ends with its name)")
    try:
        for key, target in targets.items():
            target.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(bucket, key, str(target))
    except Exception as exc:
        raise _describe_s3_failure(uri, exc) from None
    return local_dir


def contained_path(local_dir: Path, relative: str, source: str) -> Path:
    """``local_dir / relative``, refused when the object key ``relative`` would land outside
    ``local_dir`` (``..`` parts, an absolute path): anyone who can write to the bucket could
    otherwise overwrite any file this process can write."""
    parts = relative.split("/")
    root = local_dir.resolve()
    target = (root / relative).resolve()
    if ".." in parts or relative.startswith("/") or not target.is_relative_to(root):
        raise StorageError(
            f"refusing to download {source}: the object key '{relative}' under it would be "
            f"written outside {local_dir}; remove that object from the bucket"
        )
    return target


def check_writable(uri: str) -> None:
    """Fail now, with the reason, if ``uri``'s bucket cannot take a write: before a job is
    started that would only fail when it first saves."""
    bucket, key = split_s3_uri(join_uri(uri, ".graft-write-check"))
    try:
        client = s3_client()
        client.put_object(Bucket=bucket, Key=key, Body=b"")
        client.delete_object(Bucket=bucket, Key=key)
    except Exception as exc:
        raise _describe_s3_failure(uri, exc) from None


def join_uri(base: str, *parts: str) -> str:
    """``base/part/...`` for a local folder or an s3:// prefix, without doubled slashes."""
    joined = base.rstrip("/")
    for part in parts:
        joined += "/" + part.strip("/")
    return joined
