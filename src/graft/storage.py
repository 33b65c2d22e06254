"""Local paths and ``s3://`` URIs behind one small interface (boto3 for S3).

Credentials and the endpoint come from the environment only (AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL or MLFLOW_S3_ENDPOINT_URL), never from config.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from graft.errors import StorageError


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def split_s3_uri(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise StorageError(f"'{uri}' is not an s3://bucket/key URI")
    return parsed.netloc, parsed.path.lstrip("/")


def s3_endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("MLFLOW_S3_ENDPOINT_URL")


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
