"""The ``data`` block: where the examples come from, how they are split and checked."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from graft.config.base import Strict

# ----------------------------------------------------------------------------- data

# the largest class id a dataset may use: a model has one output per id up to the largest,
# so a stray id (2**33) would otherwise allocate that many outputs and die of memory
MAX_CLASS_ID = 99_999

SplitStrategy = Literal["stratified", "random", "time", "group", "sequential"]
NearDuplicatePolicy = Literal["drop", "keep_together", "error"]


class TransferTaskConfig(Strict):
    """The book's A/B protocol: task A (source) on most classes, task B (target) on the rest.

    ``target_classes`` empty means no class split: source and target are the same task. A
    preset's split belongs to its built-in dataset: loading drops it when ``data.source`` is
    another one, unless the user names a split (see ``graft.config.load``). With string labels,
    class ids are positions in the sorted distinct label strings.
    """

    target_classes: list[int] = Field(
        default_factory=list, description="original labels forming the target task B"
    )
    target_train_size: int | None = Field(
        default=None, ge=2, description="labelled target examples for finetuning (None = all)"
    )


class ImageAugmentConfig(Strict):
    """Train-only augmentation of image batches, drawn afresh each epoch from the seed.

    Validation, test, the exported model and phases that train the head on cached trunk
    outputs (``finetune.cache_bottleneck_features``) see the images as they are."""

    crop_padding: int = Field(
        default=0,
        ge=0,
        description="random crop: pad each side with this many zero pixels and crop back to "
        "the image size at a random offset (0 = off)",
    )
    horizontal_flip: bool = Field(default=False, description="mirror half the images")

    @property
    def active(self) -> bool:
        return self.crop_padding > 0 or self.horizontal_flip


class ImageConfig(Strict):
    """How an image folder source (one subfolder per class) becomes an N x C x H x W array."""

    size: int | tuple[int, int] | None = Field(
        default=None,
        description="resize every image to this side (28) or [height, width]; None keeps the "
        "images' own size, which must then be the same for all",
    )
    channels: Literal[1, 3] | None = Field(
        default=None,
        description="1 (greyscale) or 3 (RGB): every image is converted to it; None takes it "
        "from the images and refuses a folder that mixes greyscale and colour",
    )
    max_pixels: int = Field(
        default=40_000_000,
        ge=1,
        description="largest width x height an image may declare; a larger one is refused "
        "before it is decoded (a decompression bomb would otherwise exhaust memory)",
    )
    augment: ImageAugmentConfig = Field(default_factory=ImageAugmentConfig)

    @field_validator("size")
    @classmethod
    def _positive_size(cls, size: int | tuple[int, int] | None) -> int | tuple[int, int] | None:
        sides = (size,) if isinstance(size, int) else size or ()
        if any(side < 1 for side in sides):
            raise ValueError(f"image size {size} must be positive")
        return size

    def height_width(self) -> tuple[int, int] | None:
        if self.size is None:
            return None
        return (self.size, self.size) if isinstance(self.size, int) else self.size


class StreamingConfig(Strict):
    """``data.loader: streaming``: how a source larger than memory is read (docs/streaming.md)."""

    shuffle_buffer: int = Field(
        default=2048,
        ge=1,
        description="rows each training worker holds to shuffle its stream locally, reseeded "
        "every epoch (there is no global shuffle: the manifests are already in a seeded random "
        "order)",
    )
    near_duplicate_sample: int = Field(
        default=2000,
        ge=10,
        description="near duplicates are looked for among this many rows, a seeded sample of "
        "all splits (exact duplicates are found in every row, by hash), and a table's "
        "single-feature leakage check scores the sample's train and val rows; the sample is "
        "held decoded in memory, rows x channels x height x width x 4 bytes",
    )
    scan_threads: int = Field(
        default=8, ge=1, description="files data-prep reads and hashes at once (I/O bound on S3)"
    )
    cache_decoded: Literal["auto", "never", "always"] = Field(
        default="auto",
        description="keep a split's decoded rows in Ray's object store after the first "
        "decoding, so later epochs read them instead of reading and decoding every file again: "
        "auto when the decoded split fits in a quarter of the object store (the rest of it "
        "streams), never (every epoch re-reads the files: data larger than the cluster's "
        "memory), always (Ray spills what does not fit to local disk)",
    )


# the sources a streaming data-prep reads: an image folder, a .parquet file or a folder of
# them (local or s3://); an .npz or a .csv is read whole, so it is refused
STREAMING_REFUSED_SUFFIXES = (".npz", ".csv")


class DataConfig(Strict):
    source: str = Field(
        default="builtin:fashion_mnist",
        description="builtin:digits | builtin:fashion_mnist | a local .npz/.parquet/.csv path | "
        "an image folder, one subfolder per class (data.image) | a folder of .parquet files "
        "(data.loader=streaming) | the same under s3://",
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
    split_seed: int | None = Field(
        default=None,
        description="salt of the split: with split random or stratified each row's split is "
        "drawn from its content hash and this seed (with group, each group's from its id), so "
        "a row keeps its split in every snapshot of the data; None takes the run's seed. Set "
        "it to keep the split fixed while varying the seed (docs/splits.md)",
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
    image: ImageConfig = Field(default_factory=ImageConfig)
    loader: Literal["memory", "streaming"] = Field(
        default="memory",
        description="memory: data-prep decodes every example into arrays the training workers "
        "load whole | streaming: data-prep writes split manifests (file lists with content "
        "hashes) and each Ray Train worker streams its shard through Ray Data, so the data "
        "may be larger than memory (image folders and Parquet, local or s3://; random or "
        "stratified split, assigned by content hash)",
    )
    streaming: StreamingConfig = Field(default_factory=StreamingConfig)

    @model_validator(mode="after")
    def _split_settings_agree(self) -> DataConfig:
        if self.split in ("time", "group") and self.near_duplicate_policy == "keep_together":
            raise ValueError(
                f"near_duplicate_policy 'keep_together' moves rows into train, which breaks a "
                f"'{self.split}' split; use 'drop' or 'error'"
            )
        if self.time_gap and self.split != "time":
            raise ValueError("data.time_gap applies only to split: time")
        if self.loader == "streaming":
            self._check_streamable()
        return self

    @property
    def role_columns(self) -> list[str]:
        """The columns a split reads that are no features: ``time_column``, ``group_column``."""
        return [c for c in (self.time_column, self.group_column) if c is not None]

    def resolved_split_seed(self, seed: int) -> int:
        """The seed the split is drawn with: ``split_seed``, or the run's ``seed``."""
        return seed if self.split_seed is None else self.split_seed

    def _check_streamable(self) -> None:
        source = self.source.lower().rstrip("/")
        if source.startswith("builtin:") or source.endswith(STREAMING_REFUSED_SUFFIXES):
            raise ValueError(
                f"data.loader=streaming reads image folders and Parquet (a .parquet file or a "
                f"folder of them; local or s3://), not '{self.source}', which fits in memory "
                "anyway: set data.loader=memory, or write the examples as Parquet or as an "
                "image folder (one subfolder per class)"
            )
        if self.missing_values == "fill_median":
            raise ValueError(
                "data.missing_values=fill_median fills NaNs with the train split's medians, "
                "which a stream cannot compute in one pass: drop or impute the NaNs before "
                "data-prep, or set data.loader=memory"
            )
        if self.split not in ("random", "stratified"):
            raise ValueError(
                f"data.loader=streaming assigns each file to a split by its content hash "
                f"(random, stratified in expectation); split '{self.split}' needs every row "
                "in memory: use split: random or stratified, or data.loader=memory"
            )
