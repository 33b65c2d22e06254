"""Servers the tests start on 127.0.0.1: free ports, start-up with a retry on a lost port
race, and the arguments of SeaweedFS's all-in-one S3 server (run on the host or in a
container)."""

from __future__ import annotations

import contextlib
import json
import socket
import socketserver
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

S3_ACCESS_KEY = "graft-test-access"
S3_SECRET_KEY = "graft-test-secret-key"

# every server of "mini" on ports of its own: at their defaults (9333, 8888, ...) a second
# test session on the machine would collide with this one
WEED_SERVERS = ["s3", "master", "volume", "filer", "webdav", "admin"]
WEED_GRPC = ["s3", "master", "volume", "filer", "admin"]
WEED_PORT_COUNT = len(WEED_SERVERS) + len(WEED_GRPC)
# Every bucket is a collection of volumes of its own, and left at 0 "mini" allows free disk
# space / volume size volumes (1 GiB each at the default): on a runner with ~20 GB free the
# suite's ~25th bucket got "No writable volumes and no free volumes left" (an InternalError
# to boto3). Volumes are not preallocated, so a fixed, generous count costs no disk.
WEED_MAX_VOLUMES = 1000
WEED_VOLUME_SIZE_LIMIT_MB = 64


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports free now (each held until all are picked)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def serve_on_free_ports(
    command: Callable[[list[int]], list[str]],
    ready: Callable[[list[int]], bool],
    ports: int,
    timeout: float,
    attempts: int = 3,
    env: Mapping[str, str] | None = None,
) -> tuple[subprocess.Popen[bytes], list[int]]:
    """Starts ``command(ports)`` on free ports and waits until ``ready(ports)``; ``env``, when
    given, is the server's whole environment (secrets go there, never into its arguments).

    A port is free when picked and may be taken before the server binds it (by a Ray worker,
    another test session); the server then exits. That one cause, and only it, gets the server
    started again on other ports."""
    for _ in range(attempts):
        picked = free_ports(ports)
        process = subprocess.Popen(
            command(picked),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=None if env is None else dict(env),
        )
        deadline = time.monotonic() + timeout
        while process.poll() is None and time.monotonic() < deadline:
            if ready(picked):
                return process, picked
            time.sleep(0.5)
        if process.poll() is None:
            process.kill()
            raise TimeoutError(f"{command(picked)[:3]} was not ready within {timeout} s")
    raise RuntimeError(f"{command(picked)[:3]} exited on {attempts} sets of free ports")


@contextlib.contextmanager
def serving_in_thread(server: socketserver.BaseServer) -> Iterator[None]:
    """``server`` answering from a daemon thread until the block ends, then shut and closed."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def answers_http(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False


def s3_identities() -> str:
    """SeaweedFS's S3 identity file: one user with the test keys."""
    return json.dumps(
        {
            "identities": [
                {
                    "name": "graft",
                    "credentials": [{"accessKey": S3_ACCESS_KEY, "secretKey": S3_SECRET_KEY}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
    )


def weed_mini_args(root: Path, config: Path, ports: list[int]) -> list[str]:
    """`weed` arguments for an S3 server with auth, its data and logs under ``root`` (which
    holds ``data`` and ``logs``), S3 on ``ports[0]``."""
    named = [f"-{name}.port" for name in WEED_SERVERS]
    named += [f"-{name}.port.grpc" for name in WEED_GRPC]
    return [
        f"-logdir={root / 'logs'}",
        "mini",
        f"-dir={root / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-s3.config={config}",
        "-admin.ui=false",
        "-master.telemetry=false",  # no statistics sent off this machine
        f"-volume.max={WEED_MAX_VOLUMES}",
        f"-master.volumeSizeLimitMB={WEED_VOLUME_SIZE_LIMIT_MB}",
        *(f"{flag}={port}" for flag, port in zip(named, ports, strict=True)),
    ]


def s3_answers(endpoint: str) -> bool:
    """The gateway answers before its filer does: ready once a listing works."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=S3_ACCESS_KEY,
        aws_secret_access_key=S3_SECRET_KEY,
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=5),
    )
    try:
        client.list_buckets()
    except (BotoCoreError, ClientError):
        return False
    return True


def mlflow_server_args(
    backend_store: str, artifacts: str, port: int, app_name: str | None = None
) -> list[str]:
    """`mlflow` arguments for a tracking server on 127.0.0.1 that proxies its artifacts;
    ``app_name="basic-auth"`` runs MLflow's authentication app, as the chart does."""
    app = ["--app-name", app_name] if app_name else []
    return [
        "server",
        "--backend-store-uri",
        backend_store,
        "--artifacts-destination",
        artifacts,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        *app,
    ]
