"""A secret scan: after a run with (fake) credentials in its environment, none of their values
may appear in anything the run leaves behind or that Graft generates from the config."""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from pathlib import Path

# Every credential a pipeline pod can hold, as the environment variable that carries it
CREDENTIAL_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "RAY_AUTH_TOKEN",
    "KFP_TOKEN",
)


def fake_credentials() -> dict[str, str]:
    """A fresh random value per variable: a hit in the scan can only come from the run."""
    return {name: f"fake{name.lower()}{secrets.token_hex(12)}" for name in CREDENTIAL_VARIABLES}


def hits_in_files(roots: Iterable[Path], values: Iterable[str]) -> list[str]:
    """``file: variable`` for every file under ``roots`` (pickles, databases and zips
    included: read as bytes) that holds a value."""
    wanted = [value.encode() for value in values]
    found: list[str] = []
    for root in roots:
        files = [root] if root.is_file() else (p for p in root.rglob("*") if p.is_file())
        for path in files:
            data = path.read_bytes()
            found += [f"{path}: {value.decode()}" for value in wanted if value in data]
    return found


def hits_in_text(label: str, text: str, values: Iterable[str]) -> list[str]:
    return [f"{label}: {value}" for value in values if value in text]
