"""Moving a training stage's folders through S3 when the stage runs on a cluster.

A stage submitted as a Ray job or a KubeRay RayJob runs in pods that share no folder with the
KFP task (or laptop) that submitted it. With ``ray.staging_uri`` the caller uploads the
stage's input folders to ``<staging_uri>/<parent run>/<stage>/inputs/<name>`` and names those
URIs in the stage command; on the cluster, ``graft stage`` downloads them to a temporary
folder, runs the stage there, uploads its output folder to ``.../<stage>/output`` and answers
with S3 paths; the caller then downloads the output into its own output folder (the KFP
artifact) and maps the paths in the answer back. :func:`map_paths` does both mappings.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from graft.io import storage
from graft.remote.command import StageInputs

log = logging.getLogger(__name__)

_INPUT_FIELDS = ("dataset_dir", "pretrained_dir", "finetuned_dir")


def staging_prefix(staging_uri: str, stage: str, parent_run_id: str) -> str:
    """Where one stage of one pipeline run keeps its folders: the same for every retry."""
    return storage.join_uri(staging_uri, parent_run_id, stage)


def upload_inputs(inputs: StageInputs, staging_uri: str, stage: str) -> StageInputs:
    """The inputs as the cluster reads them: local folders uploaded, s3:// ones as they are."""
    prefix = staging_prefix(staging_uri, stage, inputs.parent_run_id)
    storage.check_writable(prefix)  # now, not after a cluster was started for nothing
    staged: dict[str, str] = {}
    for field in _INPUT_FIELDS:
        folder = getattr(inputs, field)
        if not folder or storage.is_s3(folder):
            continue
        target = storage.join_uri(prefix, "inputs", field.removesuffix("_dir"))
        log.info("staging %s %s -> %s", field, folder, target)
        staged[field] = storage.upload_tree(Path(folder), target)
    staged["output_dir"] = storage.join_uri(prefix, "output")
    return replace(inputs, **staged)


def download_output(
    remote: StageInputs, local: StageInputs, result: Mapping[str, Any]
) -> dict[str, Any]:
    """Fetch the stage's output folder into the caller's and give ``result`` local paths."""
    storage.download_tree(remote.output_dir, Path(local.output_dir))
    return map_paths(result, _folder_pairs(remote, local))


@contextmanager
def localized(inputs: StageInputs) -> Iterator[StageInputs]:
    """On the cluster: the inputs as local folders (downloaded from S3 where they are s3://).

    When the output folder is s3://, the stage writes to a local one, which is uploaded when
    the block ends without an error; :func:`publish_result` maps the answer's paths."""
    if not any(storage.is_s3(v) for v in (inputs.output_dir, *_input_values(inputs))):
        yield inputs
        return
    with tempfile.TemporaryDirectory(prefix="graft-stage-") as scratch:
        local: dict[str, str] = {}
        for field in _INPUT_FIELDS:
            folder = getattr(inputs, field)
            if folder and storage.is_s3(folder):
                local[field] = str(storage.download_tree(folder, Path(scratch) / field))
        if storage.is_s3(inputs.output_dir):
            local["output_dir"] = str(Path(scratch) / "output")
        here = replace(inputs, **local)
        yield here
        if storage.is_s3(inputs.output_dir):
            log.info("uploading the stage's output to %s", inputs.output_dir)
            storage.upload_tree(Path(here.output_dir), inputs.output_dir)


def publish_result(
    result: Mapping[str, Any], remote: StageInputs, here: StageInputs
) -> dict[str, Any]:
    """The answer of a stage run on local copies, with the paths the caller can read."""
    return map_paths(result, _folder_pairs(here, remote))


def map_paths(value: Any, pairs: Mapping[str, str]) -> Any:
    """``value`` with every string under a key of ``pairs`` re-rooted under its value."""
    if isinstance(value, str):
        for old, new in pairs.items():
            if old and (value == old or value.startswith(old.rstrip("/") + "/")):
                return new + value[len(old) :]
        return value
    if isinstance(value, Mapping):
        return {key: map_paths(item, pairs) for key, item in value.items()}
    if isinstance(value, list):
        return [map_paths(item, pairs) for item in value]
    return value


def _input_values(inputs: StageInputs) -> list[str]:
    return [getattr(inputs, field) for field in _INPUT_FIELDS if getattr(inputs, field)]


def _folder_pairs(source: StageInputs, target: StageInputs) -> dict[str, str]:
    """Each folder of ``source`` -> the same folder of ``target``, where they differ."""
    pairs = {}
    for field in ("output_dir", *_INPUT_FIELDS):
        old, new = getattr(source, field), getattr(target, field)
        if old and new and old != new:
            pairs[old] = new
    return pairs
