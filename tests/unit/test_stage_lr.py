"""`graft lr-find`: the LR finder on a stage's own starting model, outside tune."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
from cli_helpers import assert_one_clear_error, run_graft

from graft.config import load_config
from graft.errors import ConfigError
from graft.train.stage_lr import sweep_stage


def test_lr_find_prints_the_set_that_applies_its_suggestion(
    tiny_dataset_and_source: tuple[str, str], tmp_path: Path
) -> None:
    dataset, _ = tiny_dataset_and_source
    out = tmp_path / "finder"
    result = run_graft(
        "lr-find", "pretrain", "--dataset-dir", dataset, "-o", str(out), "--preset", "tiny",
        "--min-lr", "1e-6", "--max-lr", "10", "--num-steps", "60",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "lr_finder.json").read_text())
    assert result.stdout.strip().splitlines()[-1] == (
        f"--set pretrain.optimizer.lr={summary['suggested_lr']:.3g}"
    )
    # an order of magnitude below the loss minimum, inside the sweep
    assert 1e-6 <= summary["suggested_lr"] < summary["best_lr"] <= 10
    assert math.isclose(summary["best_lr"] / summary["suggested_lr"], 10.0, rel_tol=1e-6)
    lrs = summary["lrs"]
    assert lrs[0] == pytest.approx(1e-6) and all(b > a for a, b in itertools.pairwise(lrs))
    assert (out / "lr_finder.png").stat().st_size > 0


def test_finetune_suggestion_is_in_units_of_optimizer_lr(
    tiny_dataset_and_source: tuple[str, str], tmp_path: Path
) -> None:
    """The first phase trains the head at lr_scale x finetune.optimizer.lr: that is undone."""
    dataset, pretrained = tiny_dataset_and_source
    config = load_config(
        preset="tiny", overrides=["finetune.phases=[{trainable: head, epochs: 1, lr_scale: 4.0}]"]
    )
    sweep = sweep_stage(
        config, "transfer-finetune", dataset, tmp_path, pretrained,
        min_lr=1e-5, max_lr=10.0, num_steps=40,
    )  # fmt: skip
    assert sweep.lr_scale == 4.0
    assert sweep.suggested_lr == pytest.approx(sweep.result.suggested_lr / 4.0)
    assert sweep.lr_key == "finetune.optimizer.lr"


def test_the_same_sweep_twice_gives_the_same_suggestion(
    tiny_dataset_and_source: tuple[str, str], tmp_path: Path
) -> None:
    dataset, _ = tiny_dataset_and_source
    config = load_config(preset="tiny")
    runs = [
        sweep_stage(config, "pretrain", dataset, tmp_path, min_lr=1e-5, max_lr=1.0, num_steps=30)
        for _ in range(2)
    ]
    assert runs[0].result.losses == runs[1].result.losses


def test_an_autoencoder_pretrain_has_no_loss_to_sweep(
    tiny_dataset_and_source: tuple[str, str],
) -> None:
    dataset, _ = tiny_dataset_and_source
    config = load_config(
        preset="tiny",
        overrides=["pretrain.objective=autoencoder", "pretrain.early_stopping.monitor=val_loss"],
    )
    with pytest.raises(ConfigError, match=r"pretrain.objective=autoencoder has none to sweep"):
        sweep_stage(config, "pretrain", dataset, Path(), min_lr=1e-5, max_lr=1.0, num_steps=10)


def test_lr_find_refuses_a_stage_it_cannot_sweep(tiny_dataset_and_source: tuple[str, str]) -> None:
    result = run_graft("lr-find", "tune", "--dataset-dir", tiny_dataset_and_source[0])
    assert_one_clear_error(result, "lr-find sweeps pretrain or transfer-finetune, not 'tune'")


def test_the_sweep_reads_a_streamed_dataset_from_its_manifest(tmp_path: Path) -> None:
    """With data.loader=streaming the split is a manifest of files, not arrays: the LR finder
    (tune.lr_finder) decodes the rows it steps through (a graft run once failed here)."""
    from graft.data.prepare import prepare_dataset
    from image_folders import digits_folder

    folder = digits_folder(tmp_path / "digits", per_class=40)
    config = load_config(
        preset="tiny", overrides=[f"data.source={folder}", "data.loader=streaming"]
    )
    dataset = tmp_path / "dataset"
    prepare_dataset(config.data, config.seed, dataset, tmp_path / "test")
    sweep = sweep_stage(
        config, "pretrain", str(dataset), tmp_path, min_lr=1e-5, max_lr=1.0, num_steps=12
    )
    assert len(sweep.result.losses) > 0
    assert all(math.isfinite(loss) for loss in sweep.result.losses)
