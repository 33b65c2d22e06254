"""What data-prep writes as ``manifest.json`` beside a prepared dataset, and reads back: the
dataset's hash, shape and size, each task's classes and scaling statistics, and what the
checks found. Every later stage reads it; data-prep and its report write it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from graft.data.preprocessing import MissingValueFill
from graft.data.validation import DuplicateReport


@dataclass
class TaskInfo:
    classes: list[int]  # original labels, in the order of the remapped ids 0..K-1
    class_names: list[str]
    sizes: dict[str, int]
    mean: list[float]  # the model stem computes (x - mean) / std; see scaling_statistics
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
    split_strategy: str = "stratified"
    normalize: str = "standardize"
    missing_fill: MissingValueFill | None = None  # tabular NaN filling fitted on train
    feature_names: list[str] | None = None
    near_duplicates_found: int = 0
    warnings: list[str] = field(default_factory=list)
    # memory: <task>/<split>.npz arrays | streaming: <task>/<split>.manifest.parquet file lists
    loader: str = "memory"
    label_column: str | None = None  # a streamed table's: its rows' labels are checked on read

    @classmethod
    def read(cls, dataset_dir: str | Path) -> DataManifest:
        data = json.loads((Path(dataset_dir) / "manifest.json").read_text())
        fill = data.get("missing_fill")
        return cls(
            dataset_hash=data["dataset_hash"],
            source=data["source"],
            kind=data["kind"],
            input_shape=data["input_shape"],
            num_rows=data["num_rows"],
            duplicates=DuplicateReport(**data["duplicates"]),
            tasks={name: TaskInfo(**info) for name, info in data["tasks"].items()},
            split_strategy=data.get("split_strategy", "stratified"),
            normalize=data.get("normalize", "standardize"),
            missing_fill=None if fill is None else MissingValueFill(**fill),
            feature_names=data.get("feature_names"),
            near_duplicates_found=data.get("near_duplicates_found", 0),
            warnings=data.get("warnings", []),
            loader=data.get("loader", "memory"),
            label_column=data.get("label_column"),
        )
