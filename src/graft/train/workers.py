"""A training worker's process (threads, seeds, logging) and what a fit does across its DDP
worker group: sums, feature sharing, synchronized BN."""

from __future__ import annotations

import logging
import os
import random
import sys

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset

from graft.config.runtime import DEFAULT_TORCH_THREADS, LOG_LEVEL_ENV, TORCH_THREADS_ENV
from graft.io import ray_compat
from graft.nn.models import GraftNet

log = logging.getLogger(__name__)
progress = logging.getLogger("graft.progress")


def global_sum(value: int, world_size: int, device: torch.device) -> int:
    """``value`` summed over the workers (the process group is Ray Train's; NCCL only
    reduces tensors on the GPU)."""
    if world_size == 1 or not torch.distributed.is_initialized():
        return value
    total = torch.tensor([value], dtype=torch.int64, device=device)
    torch.distributed.all_reduce(total)
    return int(total.item())


def channels_last_on_cpu(model: nn.Module, device: torch.device) -> bool:
    """Store a model's 4-D weights channels-last when it trains on the CPU and has 2-D
    convolutions; True when it did.

    oneDNN's CPU convolutions run channels-last much faster: on the default CNN (1 torch
    thread) a training step took 26% less time, a validation pass half (bench/
    loop_throughput.py, docs/benchmarks.md). Outputs differ from the contiguous layout's in
    the last bits (another summation order) and stay the same run to run. A contiguous input
    batch needs no conversion: the convolution follows its weight's layout. The weights'
    values do not change, so a state dict loads into a model of either layout. GPUs keep
    their layout (no CUDA machine measured it here)."""
    if device.type != "cpu" or not any(isinstance(m, nn.Conv2d) for m in model.modules()):
        return False
    model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return True


@torch.no_grad()
def bottleneck_features(
    model: GraftNet,
    dataset: TensorDataset,
    device: torch.device,
    rank: int = 0,
    world: int = 1,
    batch_size: int = 1024,
) -> TensorDataset:
    """The frozen trunk's outputs for every example, each computed once across the workers
    (feature extraction): worker r runs rows r, r+world, ... and an all-gather shares them,
    since the sampler deals every worker different rows each epoch.

    The trunk runs in eval mode, as Keras' ``predict`` does for bottleneck features: frozen
    BN uses its running statistics (as it does in a head phase anyway) and frozen dropout is
    off. The train/eval flags are restored afterwards."""
    flags = {module: module.training for module in model.modules()}
    model.eval()
    inputs, targets = dataset.tensors
    own = inputs[rank::world]
    features = torch.cat(
        [
            model.features(own[start : start + batch_size].to(device))
            for start in range(0, len(own), batch_size)
        ]
    )
    for module, training in flags.items():
        module.training = training
    if world > 1:
        features = _all_gather_interleaved(features, len(inputs), world)
    return TensorDataset(features.cpu(), targets)


def _all_gather_interleaved(own: torch.Tensor, total: int, world: int) -> torch.Tensor:
    """Undo the ``rank::world`` deal: rows padded to one length (NCCL and gloo gather equal
    shapes), gathered, and put back in dataset order."""
    per_worker = -(-total // world)
    padded = torch.zeros((per_worker, *own.shape[1:]), dtype=own.dtype, device=own.device)
    padded[: len(own)] = own
    gathered = [torch.empty_like(padded) for _ in range(world)]
    torch.distributed.all_gather(gathered, padded)
    out = torch.empty((total, *own.shape[1:]), dtype=own.dtype, device=own.device)
    for rank, rows in enumerate(gathered):
        out[rank::world] = rows[: len(range(rank, total, world))]
    return out


def sync_batch_norm(model: GraftNet, device: torch.device, sync: bool) -> GraftNet:
    """With ``batch_norm.sync``, BN layers normalize with the statistics of the global batch
    (all workers') instead of each worker's shard. Torch implements SyncBatchNorm for GPUs
    only, so CPU workers keep per-worker statistics (said once in the log). The parameter and
    buffer names are unchanged, so checkpoints load into the plain model for export."""
    if not sync:
        return model
    if device.type != "cuda":
        log.warning(
            "batch_norm.sync: SyncBatchNorm runs on GPUs only; CPU workers normalize with "
            "their own batch statistics"
        )
        return model
    converted = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    assert isinstance(converted, GraftNet)  # only BN children are replaced
    return converted


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def worker_torch_threads() -> None:
    """Torch's intra-op threads as ``GRAFT_TORCH_THREADS`` says (config.runtime), at least 1."""
    torch.set_num_threads(max(1, int(os.environ.get(TORCH_THREADS_ENV, DEFAULT_TORCH_THREADS))))


def quiet_per_report_logging() -> None:
    """Ray Train logs every report (all metrics, on every rank) at INFO, which drowns the
    one-line-per-epoch progress; keep its warnings (and everything under GRAFT_LOG_LEVEL=DEBUG)."""
    if os.environ.get(LOG_LEVEL_ENV, "").upper() != "DEBUG":
        ray_compat.train_report_logger().setLevel(logging.WARNING)


def show_progress_on_rank_zero(rank: int) -> None:
    if rank == 0 and not progress.handlers:
        progress.addHandler(logging.StreamHandler(sys.stderr))
        progress.setLevel(logging.INFO)
        # Ray's worker logging also handles the root logger: propagating prints each line twice
        progress.propagate = False
