"""Train-only image augmentation (data.image.augment): the crop and flip move pixels as
documented, the draws are seeded per epoch, and only image datasets with it on get it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from graft.config import load_config
from graft.config.data import DataConfig, ImageAugmentConfig
from graft.data.prepare import prepare_dataset
from graft.train.augment import augment_images, augmented_batches, epoch_generator
from graft.train.stage_requests import image_augmentation


def _images(batch: int = 64) -> torch.Tensor:
    return torch.arange(batch * 2 * 5 * 6, dtype=torch.float32).reshape(batch, 2, 5, 6) + 1


def test_defaults_are_off() -> None:
    assert not ImageAugmentConfig().active
    assert ImageAugmentConfig(crop_padding=2).active
    assert ImageAugmentConfig(horizontal_flip=True).active


def test_a_flip_mirrors_about_half_the_images_and_nothing_else() -> None:
    x = _images(400)
    out = augment_images(
        x, ImageAugmentConfig(horizontal_flip=True), torch.Generator().manual_seed(0)
    )
    same = (out == x).flatten(1).all(1)
    mirrored = (out == x.flip(-1)).flatten(1).all(1)
    assert bool((same | mirrored).all())
    assert 150 < int(mirrored.sum()) < 250


def test_a_crop_is_a_window_of_the_zero_padded_image() -> None:
    x, pad = _images(), 2
    out = augment_images(x, ImageAugmentConfig(crop_padding=pad), torch.Generator().manual_seed(1))
    assert out.shape == x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    offsets = set()
    for image, crop in zip(padded, out, strict=True):
        windows = [
            (i, j)
            for i in range(2 * pad + 1)
            for j in range(2 * pad + 1)
            if torch.equal(image[:, i : i + 5, j : j + 6], crop)
        ]
        assert windows, "a crop that is no window of the padded image"
        offsets.add(windows[0])
    assert len(offsets) > 10  # the offsets vary from image to image (25 possible)


def test_the_draws_are_seeded_by_seed_rank_and_epoch() -> None:
    x, settings = _images(), ImageAugmentConfig(crop_padding=1, horizontal_flip=True)

    def draw(seed: int, rank: int, epoch: int) -> torch.Tensor:
        return augment_images(x, settings, epoch_generator(seed, rank, epoch))

    assert torch.equal(draw(7, 0, 3), draw(7, 0, 3))
    assert not torch.equal(draw(7, 0, 3), draw(7, 0, 4))
    assert not torch.equal(draw(7, 0, 3), draw(7, 1, 3))
    assert not torch.equal(draw(-7, 0, 3), draw(7, 0, 3))
    labels = torch.arange(len(x))
    ((xb, yb),) = augmented_batches([(x, labels)], settings, epoch_generator(7, 0, 3))
    assert torch.equal(yb, labels) and torch.equal(xb, draw(7, 0, 3))


@pytest.mark.parametrize("source", ["builtin:digits", "table"])
def test_only_image_datasets_with_augmentation_on_get_it(source: str, tmp_path: Path) -> None:
    if source == "table":
        rng = np.random.default_rng(0)
        source = str(tmp_path / "table.npz")
        np.savez(source, x=rng.normal(size=(300, 4)), y=rng.integers(0, 2, 300))
    out = tmp_path / "data"
    prepare_dataset(DataConfig(source=source), 0, out, tmp_path / "test")
    off = load_config(preset="tiny")
    assert image_augmentation(off, str(out)) is None
    on = load_config(preset="tiny", overrides=["data.image.augment.crop_padding=2"])
    expected = on.data.image.augment if source == "builtin:digits" else None
    assert image_augmentation(on, str(out)) == expected


def test_the_settings_reach_the_workers_through_the_requests_json(tmp_path: Path) -> None:
    from graft.train.stage_requests import pretrain_request

    config = load_config(
        preset="tiny",
        overrides=[
            f"work_dir={tmp_path}",
            "data.image.augment.horizontal_flip=true",
            "pretrain.preflight_overfit_batch=false",
        ],
    )
    out = tmp_path / "data"
    prepare_dataset(config.data, 0, out, tmp_path / "test")
    request = pretrain_request(config, str(out), None)
    rebuilt = type(request).model_validate_json(request.model_dump_json())
    assert rebuilt.augment == ImageAugmentConfig(horizontal_flip=True)
