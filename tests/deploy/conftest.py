"""The KubeRay CRD schemas (``../shared/crds/kuberay``, KubeRay v1.7) as JSON-schema validators,
tightened so that an unknown field fails as under the API server's strict field validation."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

CRD_DIR = Path(__file__).resolve().parents[3] / "shared" / "crds" / "kuberay"


def _strict(schema: Any) -> Any:
    """Close every object schema that lists properties, as strict field validation would."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@functools.cache
def _load_crd_validator(path: Path) -> jsonschema.Draft7Validator:
    crd = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema = _strict(version["schema"]["openAPIV3Schema"])
    # metadata is validated by the API server, not by the CRD schema
    schema["properties"]["metadata"] = {"type": "object"}
    return jsonschema.Draft7Validator(schema)


def _crd_validator(filename: str) -> jsonschema.Draft7Validator:
    path = CRD_DIR / filename
    if not path.is_file():
        pytest.skip(f"KubeRay CRDs not found at {CRD_DIR} (shared/ is not beside the repo)")
    return _load_crd_validator(path)


@pytest.fixture(scope="session")
def crd_validator() -> Callable[[str], jsonschema.Draft7Validator]:
    """``crd_validator("ray.io_rayjobs.yaml")``: the strict validator of that CRD's v1 schema;
    the calling test is skipped when the CRDs are not there."""
    return _crd_validator
