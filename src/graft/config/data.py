"""The ``data`` block: where the examples come from, how they are split and checked."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from graft.config.base import Strict

# ----------------------------------------------------------------------------- data

# the largest class id a dataset may use: a model has one output per id up to the largest,
# so a stray id (2**33) would otherwise allocate that many outputs and die of memory
MAX_CLASS_ID = 99_999

SplitStrategy = Literal["stratified", "random", "time", "group", "sequential"]
NearDuplicatePolicy = Literal["drop", "keep_together", "error"]


class TransferTaskConfig(Strict):
    """The book's A/B protocol: task A (source) on most classes, task B (target) on the rest.

    ``target_classes`` empty means no class split: source and target are the same task.
    """

    target_classes: list[int] = Field(
        default_factory=list, description="original labels forming the target task B"
    )
    target_train_size: int | None = Field(
        default=None, ge=2, description="labelled target examples for finetuning (None = all)"
    )


class DataConfig(Strict):
    source: str = Field(
        default="builtin:fashion_mnist",
        description="builtin:digits | builtin:fashion_mnist | a local .npz/.parquet path | s3://",
    )
    label_column: str = "label"
    max_rows: int | None = Field(default=None, ge=10, description="stratified subsample cap")
    val_fraction: float = Field(default=0.1, gt=0.0, lt=0.5)
    test_fraction: float = Field(default=0.15, gt=0.0, lt=0.5)
    split: SplitStrategy = Field(
        default="stratified",
        description="stratified | random | time (by time_column, oldest rows train) | group "
        "(by group_column, an entity never spans two splits) | sequential (file order cut)",
    )
    time_column: str | None = Field(
        default=None,
        description="Parquet column of timestamps (an .npz declares one with a 't' array)",
    )
    time_gap: float = Field(
        default=0.0,
        ge=0.0,
        description="split: time embargo between consecutive splits, in the time column's "
        "units (seconds for datetime columns); rows inside the gap are dropped",
    )
    allow_shuffled_time: bool = Field(
        default=False,
        description="permit a random/stratified split of data that declares a time column",
    )
    group_column: str | None = Field(
        default=None,
        description="Parquet column of entity ids (an .npz declares them with a 'groups' array)",
    )
    normalize: Literal["standardize", "minmax", "divide_by_255", "none"] = Field(
        default="standardize", description="input scaling, fitted on the train split only"
    )
    missing_values: Literal["error", "fill_median"] = Field(
        default="error",
        description="tabular NaNs: refuse them, or fill with the train median and add a "
        "0/1 indicator column per column that has gaps in train",
    )
    near_duplicate_threshold: float = Field(
        default=0.99,
        gt=0.0,
        le=1.0,
        description="similarity (cosine that also requires equal length) of train-standardized "
        "features at or above which a val/test row counts as a near duplicate of an earlier "
        "split's row; tables with fewer than 8 features are not checked",
    )
    near_duplicate_policy: NearDuplicatePolicy = Field(
        default="drop",
        description="drop the val/test copy | keep_together (move it to train) | error",
    )
    leakage_threshold: float = Field(
        default=0.98,
        gt=0.5,
        le=1.0,
        description="val balanced accuracy of a one-feature classifier that flags leakage",
    )
    leakage_policy: Literal["warn", "error"] = "warn"
    max_imbalance_ratio: float = Field(
        default=9.0, gt=1.0, description="largest/smallest class count that triggers a warning"
    )
    transfer: TransferTaskConfig = Field(default_factory=TransferTaskConfig)

    @model_validator(mode="after")
    def _split_settings_agree(self) -> DataConfig:
        if self.split in ("time", "group") and self.near_duplicate_policy == "keep_together":
            raise ValueError(
                f"near_duplicate_policy 'keep_together' moves rows into train, which breaks a "
                f"'{self.split}' split; use 'drop' or 'error'"
            )
        if self.time_gap and self.split != "time":
            raise ValueError("data.time_gap applies only to split: time")
        return self
