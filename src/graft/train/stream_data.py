"""Training from a stream (``data.loader: streaming``): Ray Data datasets over the split
manifests on the driver, and each worker's shard of them as an epoch's batches.

On the driver, each split's manifest (graft.data.streaming_manifest) becomes a Ray Data
dataset of blocks of file rows. A Ray Data task reads each block's files (local or s3://,
through graft.io.storage), checks every file's SHA-256 against the manifest, and decodes it
with the in-memory reader's code (graft.data.image_folder.decode_image). The pixels travel as
uint8: after Pillow's conversion to L or RGB they are whole numbers 0-255, so uint8 carries
them exactly at a quarter of float32's size; the worker casts each batch to float32 (the
model's stem standardizes, as for the in-memory loader). A Parquet source's blocks are rows of
one row group, which the task reads once, checking each row's hash and label
(graft.data.streaming_table), as float32 features.

TorchTrainer splits both datasets across the workers (Ray Train's ``streaming_split`` with
``equal=True``: every worker gets the same number of rows, so the DDP steps stay in lockstep;
up to ``world - 1`` rows of an epoch are left out). A worker holds its prefetched batches
and its shuffle buffer, never the split. Every epoch re-executes the stream: it reads and
decodes every file again, unless ``data.streaming.cache_decoded`` kept the decoded split in
Ray's object store (``materialize``, which Ray Data advises for a dataset that fits there:
on 2,000 small PNGs a stream that decodes every epoch ran at 0.49-0.62x the in-memory
loader's samples/s, a kept split at 0.84-0.91x; bench/streaming.py). A kept split is decoded,
and its files' hashes checked, once. Shuffling is
local: a buffer of ``data.streaming.shuffle_buffer`` rows per worker, reseeded each epoch from
(seed, epoch), over manifests that data-prep wrote in a seeded random order; there is no
global shuffle. Which blocks reach which worker is decided as the stream runs, so a streamed
fit is not bit-reproducible, unlike an in-memory one.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import logging
import math
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import torch

from graft.config import DataConfig
from graft.data.manifest import DataManifest
from graft.data.streaming_manifest import manifest_path, read_manifest
from graft.data.streaming_read import decode_files, decode_table_rows
from graft.data.streaming_table import group_rows
from graft.errors import ConfigError
from graft.nn.models import GraftNet
from graft.train.objectives import objective_loss
from graft.train.request import FitRequest, StreamInputs

BLOCK_BYTES = 4 * 2**20  # decoded bytes per Ray Data block: a few MiB in flight per task
# cache_decoded=auto keeps decoded splits up to this share of the free object store: the
# rest stays for the blocks in flight, the workers' prefetches and other users of the store
CACHE_STORE_SHARE = 0.25

progress = logging.getLogger("graft.progress")


def split_path(dataset_dir: str, task: str, split: str) -> str:
    """Where a prepared dataset keeps a task's split: its .npz, or its manifest."""
    if DataManifest.read(dataset_dir).loader == "streaming":
        return str(manifest_path(dataset_dir, task, split))
    return f"{dataset_dir.rstrip('/')}/{task}/{split}.npz"


def stream_inputs(dataset_dir: str, task: str, data: DataConfig) -> StreamInputs | None:
    """The request's stream settings for a streamed dataset; None for an in-memory one."""
    manifest = DataManifest.read(dataset_dir)
    if manifest.loader != "streaming":
        return None
    sizes = manifest.tasks[task].sizes
    table = manifest.kind == "tabular"
    return StreamInputs(
        input_shape=manifest.input_shape,
        rows={split: sizes[split] for split in ("train", "val")},
        shuffle_buffer=data.streaming.shuffle_buffer,
        max_pixels=data.image.max_pixels,
        cache_decoded=data.streaming.cache_decoded,
        features=manifest.feature_names if table else None,
        label_column=manifest.label_column if table else None,
    )


def stream_datasets(request: FitRequest) -> dict[str, Any]:
    """The train and val datasets of a streamed request, for ``TorchTrainer(datasets=...)``."""
    import ray.data

    assert request.stream is not None
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # one bar per operator per epoch drowns the log
    context.print_on_execution_start = False
    stream = request.stream
    rows_per_block = max(1, BLOCK_BYTES // math.prod(stream.input_shape))
    store_bytes = float(ray.available_resources().get("object_store_memory", 0.0))
    cached_bytes = 0
    datasets = {}
    for split, path in (("train", request.train_path), ("val", request.val_path)):
        table = read_manifest(path)
        # several blocks per worker even for a small split: the split hands out blocks
        per_block = max(1, min(rows_per_block, len(table) // 8))
        dataset = ray.data.from_arrow(_blocks(table, per_block)).map_batches(
            _decoder(stream),
            batch_format="numpy",
            batch_size=None,  # one block, one task
        )
        size = decoded_bytes(stream, len(table))
        cached = caches_decoded(stream.cache_decoded, cached_bytes + size, store_bytes)
        if cached:
            dataset = dataset.materialize()  # decoded now, once; epochs read the blocks
            cached_bytes += size
        progress.info(
            "streaming: the %s split's %d rows (%.1f MiB decoded) %s",
            split,
            len(table),
            size / 2**20,
            "were decoded once and stay in Ray's object store"
            if cached
            else "are read and decoded again every epoch",
        )
        datasets[split] = dataset
    return datasets


def decoded_bytes(stream: StreamInputs, rows: int) -> int:
    """A split's decoded size: uint8 pixels or float32 features, and an int64 label a row."""
    per_value = 4 if stream.features is not None else 1
    return rows * (math.prod(stream.input_shape) * per_value + 8)


def caches_decoded(setting: str, total_bytes: float, store_bytes: float) -> bool:
    """Whether a split is kept decoded (``data.streaming.cache_decoded``): always, never, or
    (auto) when the splits kept so far, this one included, take at most
    :data:`CACHE_STORE_SHARE` of the object store that is free now."""
    if setting == "auto":
        return total_bytes <= CACHE_STORE_SHARE * store_bytes
    return setting == "always"


def _decoder(stream: StreamInputs) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A block of manifest rows to ``x`` and ``y``: a table's rows, or image files."""
    if stream.features is not None:
        assert stream.label_column is not None
        return functools.partial(
            decode_table_rows, features=stream.features, label_column=stream.label_column
        )
    c, h, w = stream.input_shape
    return functools.partial(decode_files, shape=(c, h, w), max_pixels=stream.max_pixels)


def _blocks(table: pa.Table, per_block: int) -> list[pa.Table]:
    """Blocks of at most ``per_block`` manifest rows. A table's rows are grouped by their
    (file, row group) first, so a decoding task reads one row group, not one per row; the
    groups come in the manifest's (seeded random) order of their first row."""
    if "row_group" not in table.column_names:
        return [table.slice(start, per_block) for start in range(0, len(table), per_block)]
    uris = table.column("uri").to_pylist()
    groups = table.column("row_group").to_pylist()
    blocks = []
    for _, _, positions in group_rows(uris, groups):
        for start in range(0, len(positions), per_block):
            blocks.append(table.take(pa.array(positions[start : start + per_block])))
    return blocks


def require_decode_cpus(total_cpus: float, reserved_cpus: float) -> None:
    """Refuse a streamed fit whose workers reserve every CPU: Ray Data's decoding tasks would
    never be scheduled and the first epoch would wait forever."""
    if total_cpus - reserved_cpus < 1:
        raise ConfigError(
            f"data.loader=streaming decodes the files in Ray Data tasks, which need a CPU "
            f"beside the training workers', but the workers reserve {reserved_cpus:g} of the "
            f"cluster's {total_cpus:g} CPUs: lower <stage>.resources.cpus (e.g. 0.5) or "
            "<stage>.num_workers, or give Ray more CPUs (ray.num_cpus)"
        )


@dataclass
class StreamedSplit:
    """One worker's shard of a split, iterated once per epoch as (x float32, y int64).

    Starting an epoch's stream takes a moment (Ray Data schedules the first decoding tasks and
    fills the shuffle buffer): about half a second on 2 cores, which a short epoch would feel.
    So when a pass ends, the next epoch's stream is started at once, in a thread that pulls
    its first batch while this worker validates, reports and checkpoints."""

    shard: Any  # ray.data.DataIterator, from ray.train.get_dataset_shard
    rows: int  # this worker's rows per epoch
    batch_size: int
    drop_last: bool
    shuffle_buffer: int | None
    seed: int
    epoch: int = 0
    _primed: tuple[int, Iterator[Any], threading.Thread, list[Any]] | None = field(
        default=None, init=False, repr=False
    )

    def set_epoch(self, epoch: int) -> None:
        """The epoch the next pass draws (its shuffle seed); passes advance it by themselves."""
        if epoch != self.epoch:
            self._primed = None  # started for another epoch (not reached in a normal run)
        self.epoch = epoch

    def __len__(self) -> int:
        return self.rows // self.batch_size if self.drop_last else -(-self.rows // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for batch in self._take_primed() or self._batches(self.epoch):
            yield batch["x"], batch["y"]
        self.epoch += 1
        self._prime(self.epoch)

    def _batches(self, epoch: int) -> Iterator[Any]:
        return iter(
            self.shard.iter_torch_batches(
                batch_size=self.batch_size,
                dtypes={"x": torch.float32, "y": torch.int64},
                drop_last=self.drop_last,
                local_shuffle_buffer_size=self.shuffle_buffer,
                local_shuffle_seed=None if self.shuffle_buffer is None else _seed(self.seed, epoch),
            )
        )

    def _prime(self, epoch: int) -> None:
        batches = self._batches(epoch)
        head: list[Any] = []  # the first batch, or the exception that stopped it

        def pull() -> None:
            try:
                head.extend(itertools.islice(batches, 1))
            except BaseException as exc:  # re-raised by the pass that draws this epoch
                head.append(exc)

        thread = threading.Thread(target=pull)
        thread.daemon = True  # the last epoch's primed stream is never drawn
        thread.start()
        self._primed = (epoch, batches, thread, head)

    def _take_primed(self) -> Iterator[Any] | None:
        if self._primed is None or self._primed[0] != self.epoch:
            return None
        _, batches, thread, head = self._primed
        self._primed = None
        thread.join()
        if head and isinstance(head[0], BaseException):
            raise head[0]
        return itertools.chain(head, batches)


def _seed(seed: int, epoch: int) -> int:
    digest = hashlib.sha256(f"{seed}:{epoch}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def _shards(request: FitRequest, world: int) -> dict[str, Any]:
    """This worker's train and val shards from Ray Train; a fit run in this process alone (a
    one-worker Tune trial, graft.train.local_fit) iterates the whole datasets instead."""
    import ray.train

    try:
        return {split: ray.train.get_dataset_shard(split) for split in ("train", "val")}
    except RuntimeError:  # "cannot be used outside of a Ray Train training function"
        if world != 1:
            raise
    return {split: data.iterator() for split, data in stream_datasets(request).items()}


@dataclass
class WorkerStreams:
    """A worker's train and val shards; val is split too, its sums added over the workers."""

    train: StreamedSplit
    val: StreamedSplit
    world: int

    @classmethod
    def of(cls, request: FitRequest, world: int) -> WorkerStreams | None:
        stream = request.stream
        if stream is None:
            return None
        shards = _shards(request, world)
        batch_size = request.train_config.batch_size
        per_worker = {split: rows // world for split, rows in stream.rows.items()}
        train = StreamedSplit(
            shards["train"],
            per_worker["train"],
            batch_size,
            # as the in-memory loader: whole batches once there are more rows than one step
            drop_last=stream.rows["train"] > batch_size * world,
            # the buffer fills before the first batch: at most a quarter of the shard, so
            # training starts while the rest of a small shard is still being decoded
            shuffle_buffer=min(stream.shuffle_buffer, max(batch_size, per_worker["train"] // 4)),
            seed=request.seed,
        )
        # validation batches of the training batch's size: the worker's peak memory is set
        # by the batch, not by how large the val split is (a 1024-row batch through a CNN
        # takes hundreds of MiB)
        val = StreamedSplit(shards["val"], per_worker["val"], batch_size, False, None, 0)
        return cls(train, val, world)

    @torch.no_grad()
    def evaluate(self, model: GraftNet, objective: str, device: torch.device) -> dict[str, float]:
        """Mean loss (and accuracy) over every worker's val shard, as graft.train.rows'
        ``evaluate_model`` computes it over a whole split."""
        model.eval()
        sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss, correct, count
        for xb, yb in self.val:
            xb, yb = xb.to(device), yb.to(device)
            logits = model(xb)
            sums[0] += objective_loss(model, logits, xb, yb, objective, reduction="sum").double()
            if objective == "classify":
                sums[1] += (logits.argmax(1) == yb).sum()
            sums[2] += len(yb)
        if self.world > 1 and torch.distributed.is_initialized():
            torch.distributed.all_reduce(sums)
        count = max(float(sums[2]), 1.0)
        scores = {"loss": float(sums[0]) / count}
        if objective == "classify":
            scores["accuracy"] = float(sums[1]) / count
        return scores

    @property
    def train_rows(self) -> int:
        return self.train.rows * self.world
