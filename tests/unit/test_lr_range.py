"""The tune stage's LR-finder pre-step narrows the LR search range from one real sweep."""

import math
from pathlib import Path

import pytest

from graft.config import LR_SEARCH_KEY, GraftConfig, load_config
from graft.errors import ConfigError
from graft.tune.lr_range import narrow_lr_range, narrowed_window

WIDE = '{"type": "loguniform", "low": 1e-7, "high": 100.0}'


def _config(tmp_path: Path, *overrides: str) -> GraftConfig:
    return load_config(
        preset="tiny",
        overrides=[f"work_dir={tmp_path}", "tune.lr_finder.enabled=true", *overrides],
    )


def test_window_is_centred_on_the_suggestion_and_clipped_to_the_configured_range() -> None:
    low, high, narrowed = narrowed_window(1e-3, 2.0, 1e-6, 1.0)
    assert narrowed and math.isclose(low, 1e-4) and math.isclose(high, 1e-2)
    low, high, narrowed = narrowed_window(1e-3, 2.0, 5e-4, 1.0)
    assert narrowed and low == 5e-4 and math.isclose(high, 1e-2)
    # no overlap: the configured range is kept, never replaced by one the user excluded
    assert narrowed_window(10.0, 1.0, 1e-5, 1e-2) == (1e-5, 1e-2, False)


def test_sweep_narrows_a_wide_lr_range_around_its_suggestion(
    tiny_dataset_and_source: tuple[str, str], tmp_path: Path
) -> None:
    dataset, pretrained = tiny_dataset_and_source
    config = _config(tmp_path, f"tune.space={{{LR_SEARCH_KEY!r}: {WIDE}}}".replace("'", '"'))
    narrowed_config, outcome = narrow_lr_range(config, dataset, pretrained, tmp_path / "finder")
    dim = narrowed_config.tune.space[LR_SEARCH_KEY]
    assert dim.type == "loguniform"
    assert outcome.narrowed
    assert 1e-7 < dim.low < outcome.suggested_lr < dim.high < 100.0
    assert math.isclose(math.log10(dim.high / dim.low), 1.0)  # window_decades
    # the sweep saw where the loss bottoms out: the window stays below it
    assert dim.high <= outcome.best_lr
    assert config.tune.space[LR_SEARCH_KEY].high == 100.0  # the input config is untouched
    assert Path(outcome.plot).stat().st_size > 0
    assert (tmp_path / "finder" / "lr_range.json").exists()
    # the same seed sweeps the same batches: a resumed search gets the same space
    again, _ = narrow_lr_range(config, dataset, pretrained, tmp_path / "again")
    assert again.tune.space[LR_SEARCH_KEY] == dim


def test_phase_lr_scale_is_undone_so_the_range_is_in_optimizer_lr_units(
    tiny_dataset_and_source: tuple[str, str], tmp_path: Path
) -> None:
    dataset, pretrained = tiny_dataset_and_source
    space = f"tune.space={{{LR_SEARCH_KEY!r}: {WIDE}}}".replace("'", '"')
    plain = _config(tmp_path, space)
    scaled = _config(
        tmp_path,
        space,
        "finetune.phases=[{trainable: head, epochs: 2, lr_scale: 0.1}]",
    )
    _, unscaled_outcome = narrow_lr_range(plain, dataset, pretrained, tmp_path / "a")
    _, scaled_outcome = narrow_lr_range(scaled, dataset, pretrained, tmp_path / "b")
    # phase 0 trains at lr * 0.1: the same sweep must suggest a 10x larger optimizer lr
    assert math.isclose(
        scaled_outcome.suggested_lr, 10 * unscaled_outcome.suggested_lr, rel_tol=1e-6
    )


def test_lr_finder_needs_a_loguniform_lr_dimension(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="lr_finder"):
        _config(
            tmp_path,
            'tune.space={"finetune.optimizer.lr": {"type": "uniform", "low": 0.001, "high": 0.1}}',
        )
    # a space that does not search the LR: nothing to narrow, not a contradiction
    _config(
        tmp_path, 'tune.space={"model.dropout.rate": {"type": "uniform", "low": 0, "high": 0.5}}'
    )
