"""data-prep: read, validate, deduplicate, split, build the A/B transfer tasks, write artifacts.

Layout of a prepared dataset directory::

    manifest.json                 dataset hash, sizes, class names, stats per task
    report.json / report.html     what a person reads: counts, duplicates, splits
    source/{train,val,test}.npz   task A (pretrain)
    target/{train,val,test}.npz   task B (transfer-finetune, tune, evaluate)
"""

from __future__ import annotations

import html
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from graft.config import DataConfig
from graft.data.sources import RawDataset, load_source
from graft.data.validation import (
    DuplicateReport,
    assert_disjoint,
    dataset_hash,
    drop_exact_duplicates,
    validate_raw,
    validate_target_classes,
)
from graft.errors import DatasetError

SPLITS = ("train", "val", "test")
TASKS = ("source", "target")


@dataclass
class TaskInfo:
    classes: list[int]  # original labels, in the order of the remapped ids 0..K-1
    class_names: list[str]
    sizes: dict[str, int]
    mean: list[float]
    std: list[float]


@dataclass
class DataManifest:
    dataset_hash: str
    source: str
    kind: str
    input_shape: list[int]
    num_rows: int
    duplicates: DuplicateReport
    tasks: dict[str, TaskInfo] = field(default_factory=dict)

    @classmethod
    def read(cls, dataset_dir: str | Path) -> DataManifest:
        data = json.loads((Path(dataset_dir) / "manifest.json").read_text())
        return cls(
            dataset_hash=data["dataset_hash"],
            source=data["source"],
            kind=data["kind"],
            input_shape=data["input_shape"],
            num_rows=data["num_rows"],
            duplicates=DuplicateReport(**data["duplicates"]),
            tasks={name: TaskInfo(**info) for name, info in data["tasks"].items()},
        )


def _subsample(y: np.ndarray, limit: int | None, seed: int) -> np.ndarray:
    indices = np.arange(len(y))
    if limit is None or limit >= len(y):
        return indices
    kept, _ = train_test_split(indices, train_size=limit, stratify=y, random_state=seed)
    return np.sort(kept)


def split_indices(y: np.ndarray, config: DataConfig, seed: int) -> dict[str, np.ndarray]:
    """Train/val/test indices, stratified by label unless ``split: random``."""
    indices = np.arange(len(y))
    stratify = y if config.split == "stratified" else None
    try:
        rest, test = train_test_split(
            indices, test_size=config.test_fraction, stratify=stratify, random_state=seed
        )
        val_share = config.val_fraction / (1.0 - config.test_fraction)
        train, val = train_test_split(
            rest,
            test_size=val_share,
            stratify=None if stratify is None else y[rest],
            random_state=seed + 1,
        )
    except ValueError as exc:
        raise DatasetError(
            f"cannot split {len(y)} rows into train/val/test ({exc}); "
            "add rows or lower data.val_fraction / data.test_fraction"
        ) from None
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}


def _task_labels(raw: RawDataset, target_classes: list[int]) -> dict[str, list[int]]:
    all_classes = sorted(np.unique(raw.y).tolist())
    if not target_classes:
        return {"source": all_classes, "target": all_classes}
    return {
        "source": [c for c in all_classes if c not in target_classes],
        "target": sorted(target_classes),
    }


def _normalization(x: np.ndarray, kind: str) -> tuple[list[float], list[float]]:
    """Statistics from the training split only: per channel for images, per column for tables."""
    axes = (0, 2, 3) if kind == "image" else (0,)
    mean = x.mean(axis=axes)
    std = x.std(axis=axes)
    std = np.where(std < 1e-8, 1.0, std)  # constant columns pass through unscaled
    return mean.astype(float).tolist(), std.astype(float).tolist()


def prepare_dataset(config: DataConfig, seed: int, output_dir: str | Path) -> DataManifest:
    out = Path(output_dir)
    raw = load_source(config.source, config.label_column)
    validate_raw(raw)
    validate_target_classes(raw, config.transfer.target_classes)
    raw, duplicates, hashes = drop_exact_duplicates(raw)
    keep = _subsample(raw.y, config.max_rows, seed)
    x, y, hashes = raw.x[keep], raw.y[keep], hashes[keep]
    if not raw.class_names:
        raw.class_names = [str(c) for c in range(int(y.max()) + 1)]

    splits = split_indices(y, config, seed)
    assert_disjoint({name: hashes[idx] for name, idx in splits.items()})
    manifest = DataManifest(
        dataset_hash=dataset_hash(x, y),
        source=config.source,
        kind=raw.kind,
        input_shape=list(x.shape[1:]),
        num_rows=len(x),
        duplicates=duplicates,
    )
    rng = np.random.default_rng(seed)
    for task, labels in _task_labels(raw, config.transfer.target_classes).items():
        remap = {label: new for new, label in enumerate(labels)}
        task_dir = out / task
        task_dir.mkdir(parents=True, exist_ok=True)
        sizes: dict[str, int] = {}
        stats: tuple[list[float], list[float]] = ([], [])
        for split in SPLITS:
            idx = splits[split][np.isin(y[splits[split]], labels)]
            if task == "target" and split == "train" and config.transfer.target_classes:
                idx = idx[_subsample(y[idx], config.transfer.target_train_size, seed)]
            idx = rng.permutation(idx)
            task_y = np.array([remap[int(v)] for v in y[idx]], dtype=np.int64)
            missing = sorted(set(range(len(labels))) - set(task_y.tolist()))
            if missing:
                raise DatasetError(
                    f"the {task} task's {split} split has no examples of classes "
                    f"{[labels[m] for m in missing]}; add data or lower the split fractions"
                )
            np.savez(task_dir / f"{split}.npz", x=x[idx], y=task_y, row_hash=hashes[idx])
            sizes[split] = len(idx)
            if split == "train":
                stats = _normalization(x[idx], raw.kind)
        manifest.tasks[task] = TaskInfo(
            classes=labels,
            class_names=[raw.class_names[c] for c in labels],
            sizes=sizes,
            mean=stats[0],
            std=stats[1],
        )
    (out / "manifest.json").write_text(json.dumps(asdict(manifest), indent=2))
    write_report(manifest, out)
    return manifest


def load_split(dataset_dir: str | Path, task: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    with np.load(Path(dataset_dir) / task / f"{split}.npz") as archive:
        return archive["x"], archive["y"]


def write_report(manifest: DataManifest, out: Path) -> None:
    report = asdict(manifest)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    rows = []
    for task, info in manifest.tasks.items():
        names = ", ".join(html.escape(n) for n in info.class_names)
        sizes = " / ".join(f"{info.sizes[s]}" for s in SPLITS)
        rows.append(f"<tr><td>{task}</td><td>{names}</td><td>{sizes}</td></tr>")
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>Graft data report</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:4px 10px;"
        "border-bottom:1px solid #ddd}</style></head><body>"
        f"<h1>Data report</h1><p>source <code>{html.escape(manifest.source)}</code>, "
        f"hash <code>{manifest.dataset_hash}</code>, {manifest.num_rows} rows, input shape "
        f"{manifest.input_shape}</p><p>exact duplicates dropped before splitting: "
        f"{manifest.duplicates.exact_duplicates_dropped} "
        f"(with conflicting labels: {manifest.duplicates.conflicting_labels})</p>"
        "<table><tr><th>task</th><th>classes</th><th>train / val / test</th></tr>"
        + "".join(rows)
        + "</table></body></html>"
    )
    (out / "report.html").write_text(page)


def check_source(config: DataConfig) -> None:
    """Read and validate the source without writing anything: the CLI's fail-fast check."""
    raw = load_source(config.source, config.label_column)
    validate_raw(raw)
    validate_target_classes(raw, config.transfer.target_classes)
