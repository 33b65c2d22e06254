"""Train-only image augmentation (``data.image.augment``): a random crop of the zero-padded
image and a horizontal flip, applied to each training batch as the loop draws it.

The draws come from their own generator, seeded from the fit's seed, the worker's rank and
the epoch: each epoch sees new crops and flips, the same ones on a rerun, and a run resumed
from a checkpoint at an epoch boundary draws what the uninterrupted run would have drawn.
Only pixels move; the labels stay as they are.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from graft.config.data import ImageAugmentConfig


def augment_images(
    x: torch.Tensor, settings: ImageAugmentConfig, generator: torch.Generator
) -> torch.Tensor:
    """``x`` (B x C x H x W), each image flipped and cropped by its own draw."""
    batch, channels, height, width = x.shape
    if settings.horizontal_flip:
        flip = torch.rand(batch, generator=generator) < 0.5
        x = torch.where(flip[:, None, None, None].to(x.device), x.flip(-1), x)
    pad = settings.crop_padding
    if pad:
        padded = F.pad(x, (pad, pad, pad, pad))
        offsets = torch.randint(0, 2 * pad + 1, (batch, 2), generator=generator).to(x.device)
        rows = offsets[:, :1] + torch.arange(height, device=x.device)  # B x H
        cols = offsets[:, 1:] + torch.arange(width, device=x.device)  # B x W
        rows_index = rows[:, None, :, None].expand(-1, channels, -1, width + 2 * pad)
        x = padded.gather(2, rows_index)  # B x C x H x (W + 2 pad)
        x = x.gather(3, cols[:, None, None, :].expand(-1, channels, height, -1))
    return x


def epoch_generator(seed: int, rank: int, epoch: int) -> torch.Generator:
    """The augmentation draws of one worker's epoch."""
    entropy = np.random.SeedSequence([abs(seed), int(seed < 0), rank, epoch])
    return torch.Generator().manual_seed(int(entropy.generate_state(1, np.uint64)[0]))


def augmented_batches(
    batches: Iterable[Any], settings: ImageAugmentConfig, generator: torch.Generator
) -> Iterator[Any]:
    """``batches`` of (x, y) with each x augmented; 4-D image batches only."""
    for xb, yb in batches:
        yield augment_images(xb, settings, generator), yb
