"""A one-worker trial trains inside its Tune trainable (``tune.trial_runner``): the same
trial gives bit-identical weights and the same epoch reports as a Ray Train fit of it, a
trial that fails resumes from its last Tune checkpoint, and ASHA cuts trials on their
per-epoch reports while Tune reuses their actors."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from ray import cloudpickle

from graft.config import GraftConfig, load_config
from graft.data.prepare import prepare_dataset
from graft.io import tracking
from graft.io.ray_runtime import ensure_ray, shutdown_ray
from graft.train.local_fit import fit_here
from graft.train.model_dir import HISTORY_FILE, MODEL_FILE
from graft.train.stage_requests import finetune_request
from graft.tune import trial as tune_trial
from graft.tune.runs import trial_runs
from graft.tune.search import SearchResult, run_search

pytestmark = [pytest.mark.ray, pytest.mark.timeout(400)]

# the trial function defined here runs in Ray's workers, which cannot import a test module:
# ship it by value
cloudpickle.register_pickle_by_value(sys.modules[__name__])

# the epoch's timings differ run to run; everything else a report carries must not
TIMINGS = {"epoch_seconds", "epoch_cpu_seconds"}


def _config(work: Path, runner: str, *overrides: str) -> GraftConfig:
    return load_config(
        preset="tiny",
        overrides=[
            f"work_dir={work}",
            "tune.lr_finder.enabled=false",
            "tune.searcher=random",
            f"tune.trial_runner={runner}",
            *overrides,
        ],
    )


def _search(
    config: GraftConfig, dataset: Path, pretrained: Path, name: str, **trial: Any
) -> tuple[SearchResult, str]:
    """The search's result and its MLflow run (the trials' parent)."""
    parent = tracking.start_pipeline_run(config, "test")
    out = config.work_path / "out"
    return run_search(config, str(dataset), str(pretrained), out, parent, name, **trial), parent


def _final_weights(config: GraftConfig, name: str) -> dict[str, torch.Tensor]:
    """The one trial's final model (its folder's weights, as the fit left them)."""
    (trial_dir,) = (config.work_path / "tune-trials" / name).iterdir()
    weights: dict[str, torch.Tensor] = torch.load(trial_dir / "model" / MODEL_FILE)
    return weights


def _unequal(old: dict[str, torch.Tensor], new: dict[str, torch.Tensor]) -> list[str]:
    assert old.keys() == new.keys()
    return [name for name in old if not torch.equal(old[name], new[name])]


def _trial_results(config: GraftConfig, name: str) -> dict[str, list[dict[str, float]]]:
    """Each trial's reports as Tune recorded them (its result.json), by trial id."""
    reports: dict[str, list[dict[str, float]]] = {}
    for results in (config.work_path / "ray" / "tune" / name).glob("*/result.json"):
        rows = [json.loads(line) for line in results.read_text().splitlines() if line]
        reports[str(rows[0]["trial_id"])] = rows
    return reports


@pytest.fixture(scope="module")
def inputs(
    tmp_path_factory: pytest.TempPathFactory, untrained_model_dir: Callable[..., Path]
) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("runners")
    config = load_config(preset="tiny")
    dataset = root / "dataset"
    prepare_dataset(config.data, config.seed, dataset)
    return dataset, untrained_model_dir(config, dataset, root / "pretrained")


@pytest.fixture(scope="module")
def own_ray() -> Iterator[None]:
    ensure_ray(load_config(preset="tiny").ray)
    yield
    shutdown_ray()


def test_a_trial_trained_in_its_trainable_matches_its_ray_train_fit_bit_for_bit(
    inputs: tuple[Path, Path], tmp_path: Path, own_ray: None
) -> None:
    dataset, pretrained = inputs
    finals: dict[str, dict[str, torch.Tensor]] = {}
    handed_on: dict[str, dict[str, torch.Tensor]] = {}
    histories: dict[str, list[dict[str, float]]] = {}
    params = {}
    for runner in ("ray_train", "in_trainable"):
        config = _config(tmp_path / runner, runner, "tune.num_samples=1", "tune.scheduler=fifo")
        result, _ = _search(config, dataset, pretrained, "same")
        (trial_dir,) = (config.work_path / "tune-trials" / "same").iterdir()
        finals[runner] = _final_weights(config, "same")
        handed_on[runner] = torch.load(
            Path(result.best_checkpoint_dir) / MODEL_FILE, weights_only=True
        )
        histories[runner] = json.loads((trial_dir / "model" / HISTORY_FILE).read_text())
        params[runner] = result.best_params
        # only a Ray Train trial has a Train run (its checkpoints) under its folder
        assert (trial_dir / "ray").exists() == (runner == "ray_train")
        (reports,) = _trial_results(config, "same").values()
        # Tune got one report per epoch, each with the epoch the loop counted
        assert [r["epoch"] for r in reports] == list(range(1, len(histories[runner]) + 1))

    assert params["ray_train"] == params["in_trainable"]  # the searcher's seed: one trial
    for weights in (finals, handed_on):
        unequal = _unequal(weights["ray_train"], weights["in_trainable"])
        assert not unequal, f"tensors that differ between the runners: {unequal}"
    assert len(histories["ray_train"]) == len(histories["in_trainable"]) >= 2
    for old_row, new_row in zip(histories["ray_train"], histories["in_trainable"], strict=True):
        assert {k: v for k, v in old_row.items() if k not in TIMINGS} == {
            k: v for k, v in new_row.items() if k not in TIMINGS
        }


FAIL_AT = 3  # epochs done when the injected failure strikes


def _fails_once(params: dict[str, Any], search: tune_trial.SearchInputs) -> None:
    """run_trial's fit in the trainable, failing once as the epoch after FAIL_AT starts."""
    trial = tune_trial.start_trial(params, search)
    request = finetune_request(
        trial.config, search.dataset_dir, search.pretrained_dir, trial.dir, trial.run_id
    )
    failing = request.model_copy(update={"fail_at_epoch": FAIL_AT})
    fit_here(failing, tune_trial.trial_session(trial.config), trial.dir / "model")


def test_a_failed_in_trainable_trial_resumes_from_its_last_checkpoint(
    inputs: tuple[Path, Path], tmp_path: Path, own_ray: None
) -> None:
    """Tune restarts the trial (finetune.checkpoint.max_failures) from the checkpoint of its
    last epoch; it ends with the weights of a trial that never failed."""
    dataset, pretrained = inputs
    overrides = ("tune.num_samples=1", "tune.scheduler=fifo")
    clean = _config(tmp_path / "clean", "in_trainable", *overrides)
    _search(clean, dataset, pretrained, "clean")
    failed = _config(tmp_path / "failed", "in_trainable", *overrides)
    _, parent = _search(failed, dataset, pretrained, "failed", trial_function=_fails_once)
    marker = dataset / "target" / f".failed-{FAIL_AT}"
    assert marker.exists()  # the failure struck
    marker.unlink()

    assert not _unequal(_final_weights(clean, "clean"), _final_weights(failed, "failed"))
    client = tracking.client_for(failed)
    (run_id,) = trial_runs(failed, parent).values()
    # the restart went on from epoch FAIL_AT's checkpoint: no epoch trained twice
    logged = sorted(m.step for m in client.get_metric_history(run_id, "epoch"))
    assert logged == list(range(1, sum(p.epochs for p in failed.finetune.phases) + 1))
    resumed = client.get_metric_history(run_id, "resumed_from_epoch")
    assert [m.value for m in resumed] == [FAIL_AT]


def test_asha_cuts_in_trainable_trials_on_their_epoch_reports_in_reused_actors(
    inputs: tuple[Path, Path], tmp_path: Path, own_ray: None
) -> None:
    dataset, pretrained = inputs
    trials = 6
    config = _config(
        tmp_path,
        "auto",  # one worker per trial: in the trainable
        f"tune.num_samples={trials}",
        "tune.max_concurrent=2",
        "tune.scheduler=asha",
        "tune.grace_period=1",
        "tune.reduction_factor=2",
        # only ASHA stops a trial before its last epoch
        "finetune.early_stopping.enabled=false",
    )
    result, _ = _search(config, dataset, pretrained, "asha")
    max_epochs = sum(p.epochs for p in config.finetune.phases)
    frame = pd.read_csv(result.trials_table)
    assert result.num_trials == trials
    # ASHA's cuts vary run to run: at least one trial cut, never all of them
    assert 1 <= result.num_stopped_early < trials
    reports = _trial_results(config, "asha")
    assert set(reports) == set(frame["trial_id"])
    for trial_id, rows in reports.items():
        # every epoch reached Tune as it ended: a cut trial stopped at an ASHA rung
        epochs = [int(r["epoch"]) for r in rows]
        assert epochs == list(range(1, len(rows) + 1)), trial_id
    cut = frame[frame["outcome"] == "cut"]
    assert (cut["epoch"] < max_epochs).all()
    assert set(cut["epoch"]) <= {1, 2, 4, 8}  # ASHA's rungs: grace 1, reduction factor 2
    # two actors at a time, reused from trial to trial
    pids = {int(rows[0]["pid"]) for rows in reports.values()}
    assert len(pids) < trials
    assert (Path(result.best_checkpoint_dir) / MODEL_FILE).exists()
