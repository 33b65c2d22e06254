"""The sealed test split: test rows live apart from the dataset artifact; evaluate reads them.

data-prep writes the dataset directory (train and val of each task, manifest, reports) and,
separately, a test-split directory::

    test_split.json     dataset hash, rows and split-manifest digest per task
    source/test.npz     task A's test rows
    target/test.npz     task B's test rows

In the pipeline the second directory is its own KFP artifact and only evaluate consumes it,
so no training, tuning or export step can read test rows, let alone select on them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from graft.data.manifest import DataManifest
from graft.data.splits import (
    SPLIT_MANIFEST_FILE,
    SplitResult,
    split_manifest_digest,
    write_split_manifest,
)
from graft.data.streaming_manifest import manifest_path
from graft.data.streaming_read import load_streamed_split
from graft.errors import DatasetError

MANIFEST_FILE = "test_split.json"


@dataclass
class HoldoutManifest:
    """What evaluate needs to trust the test rows it reads: which prepared dataset they belong
    to, and the digest of each task's test rows (the key of the evaluation ledger)."""

    dataset_hash: str
    split_manifest_digest: str  # digest of the dataset's splits.json: the exact split
    rows: dict[str, int] = field(default_factory=dict)  # task -> test rows
    digests: dict[str, str] = field(default_factory=dict)  # task -> split-manifest digest

    def write(self, test_split_dir: str | Path) -> Path:
        path = Path(test_split_dir) / MANIFEST_FILE
        path.write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def read(cls, test_split_dir: str | Path) -> HoldoutManifest:
        path = Path(test_split_dir) / MANIFEST_FILE
        if not path.exists():
            raise DatasetError(
                f"{path} not found: {test_split_dir} is not a test-split directory written by "
                "data-prep (pass data-prep's test_split output, not its dataset)"
            )
        return cls(**json.loads(path.read_text()))


def default_holdout_dir(dataset_dir: str | Path) -> Path:
    """Where data-prep puts the test rows when no directory is given: ``<dataset>-test``, a
    sibling, never inside the dataset directory."""
    dataset = Path(dataset_dir)
    return dataset.with_name(f"{dataset.name}-test")


def holdout_path(test_split_dir: str | Path, task: str) -> Path:
    return Path(test_split_dir) / task / "test.npz"


def load_holdout(
    test_split_dir: str | Path, task: str, dataset_dir: str | Path
) -> tuple[np.ndarray, np.ndarray]:
    """The test rows of ``task``, refused unless they come from the same split as the
    dataset directory the model was trained on (another seed's test rows could be this
    split's train rows)."""
    manifest = HoldoutManifest.read(test_split_dir)
    digest = split_manifest_digest(Path(dataset_dir) / SPLIT_MANIFEST_FILE)
    if manifest.split_manifest_digest != digest:
        raise DatasetError(
            f"the test split in {test_split_dir} comes from another split than the dataset in "
            f"{dataset_dir} (split manifest {manifest.split_manifest_digest} vs {digest}); pass "
            "the test_split and dataset outputs of the same data-prep run"
        )
    listed = manifest_path(test_split_dir, task, "test")
    if listed.exists():  # data.loader: streaming: the test files, decoded here
        return load_streamed_split(listed, dataset_dir)
    with np.load(holdout_path(test_split_dir, task)) as archive:
        return archive["x"], archive["y"]


def write_split_records(
    manifest: DataManifest,
    result: SplitResult,
    row_ids: np.ndarray,
    hashes: np.ndarray,
    dropped: dict[str, np.ndarray],
    task_positions: dict[str, dict[str, np.ndarray]],
    seed: int,
    out: Path,
    holdout: Path,
) -> None:
    """What both data-preps (in memory, streaming) record of a split: splits.json and
    manifest.json in ``out``, the test split's record in ``holdout``."""
    split_manifest = out / SPLIT_MANIFEST_FILE
    digests = write_split_manifest(
        split_manifest,
        result,
        row_ids,
        hashes,
        seed,
        manifest.dataset_hash,
        dropped,
        task_positions,
    )
    HoldoutManifest(
        dataset_hash=manifest.dataset_hash,
        split_manifest_digest=split_manifest_digest(split_manifest),
        rows={task: info.sizes["test"] for task, info in manifest.tasks.items()},
        digests={task: by_split["test"] for task, by_split in digests.items()},
    ).write(holdout)
    (out / "manifest.json").write_text(json.dumps(asdict(manifest), indent=2))
