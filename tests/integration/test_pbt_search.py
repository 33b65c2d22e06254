"""Population Based Training over real Ray Train segments: weak trials restart from strong
trials' checkpoints with perturbed hyperparameters, epochs continue across segments and
exploits, and the best trial's model is the one its metric describes.

Synchronous PBT makes the exploits countable: at each perturbation point the whole population
is ranked, and with 3 trials and quantile 0.5 exactly one trial copies another. Asynchronous
PBT ranks a trial against whatever the others reported so far, so only "at least one" holds;
everything else is checked the same way."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from search_helpers import search_on_own_ray

from graft import tracking
from graft.config import load_config
from graft.train.loop import evaluate_model, load_checkpoint_model, load_split_rows
from graft.tune.pbt import EXPLOITS_TAG, RESTORED_AT_EPOCH_TAG, RESTORED_FROM_TAG
from graft.tune.runs import trial_runs

# slow: a population of Ray Train segments takes minutes here; `make test-all` runs it
pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(600)]

LR = "finetune.optimizer.lr"
EPOCHS = 3
TRIALS = 3
# LRs 4 decades apart: the losses differ enough that the bottom half copies the top half
SPACE = json.dumps({LR: {"type": "loguniform", "low": 1e-5, "high": 0.3}})
PHASES = json.dumps(
    [{"trainable": "head", "epochs": 2}, {"trainable": "all", "epochs": 1, "lr_scale": 0.5}]
)


@pytest.mark.parametrize("synch", [True, False], ids=["synchronous", "asynchronous"])
def test_pbt_exploits_weak_trials_and_continues_their_epochs(
    synch: bool, tmp_path: Path, untrained_model_dir: Callable[..., Path]
) -> None:
    config = load_config(
        preset="tiny",
        overrides=[
            f"work_dir={tmp_path / 'work'}",
            "tune.lr_finder.enabled=false",
            "tune.scheduler=pbt",
            "tune.searcher=random",
            f"tune.num_samples={TRIALS}",
            "tune.max_concurrent=3",
            # the whole population trains at once: 3 workers on this 2-CPU local Ray
            "finetune.resources.cpus=0.5",
            "tune.metric=val_loss",
            "tune.pbt.perturbation_interval=1",
            "tune.pbt.quantile_fraction=0.5",
            "tune.pbt.resample_probability=0",
            f"tune.pbt.synch={str(synch).lower()}",
            f"tune.space={SPACE}",
            f"finetune.phases={PHASES}",
        ],
    )
    result, dataset, tune_run = search_on_own_ray(config, tmp_path, untrained_model_dir, "pbt-test")

    frame = pd.read_csv(result.trials_table)
    assert len(frame) == TRIALS == result.num_trials
    # every trial trained the whole finetune: cumulative epochs, however often it was exploited
    assert frame["epoch"].tolist() == [EPOCHS] * TRIALS
    assert frame["fit_complete"].tolist() == [1.0] * TRIALS
    assert result.total_epochs == TRIALS * EPOCHS
    assert result.num_stopped_early == 0

    if synch:
        # one exploit per perturbation point (after epochs 1 and 2; the last report ends a trial)
        assert frame["pbt_exploits"].sum() == EPOCHS - 1
    else:
        # the 1e-5-scale trial is ranked last once another trial has reported
        assert 1 <= frame["pbt_exploits"].sum() <= TRIALS * (EPOCHS - 1)
    exploited = frame[frame["pbt_exploits"] >= 1]
    client = tracking.client_for(config)
    runs = trial_runs(config, tune_run)
    assert set(runs) == set(frame["trial_id"])
    for _, row in exploited.iterrows():
        run = client.get_run(runs[row["trial_id"]])
        donor = run.data.tags[RESTORED_FROM_TAG]
        assert donor in runs and donor != row["trial_id"]
        assert donor == row["pbt_restored_from"]
        assert 1 <= int(run.data.tags[RESTORED_AT_EPOCH_TAG]) < EPOCHS
        assert int(run.data.tags[EXPLOITS_TAG]) == row["pbt_exploits"]
        # the run's params are the trial's first hyperparameters; PBT moved it elsewhere
        initial_lr = float(run.data.params[LR])
        final_lr = float(row[f"config/{LR}"])
        assert final_lr != pytest.approx(initial_lr, rel=1e-6)
        assert 1e-5 <= final_lr <= 0.3
        lrs = client.get_metric_history(run.info.run_id, f"pbt.{LR}")
        assert lrs[-1].value == pytest.approx(final_lr)
        assert {m.value for m in lrs} != {final_lr}  # the LR schedule PBT applied is logged
        # one logged value per epoch of the whole finetune, on the trial's epoch scale
        epochs = client.get_metric_history(run.info.run_id, "epoch")
        assert sorted(m.step for m in epochs) == list(range(1, EPOCHS + 1))
        assert all(m.value == m.step for m in epochs)

    # the best trial's model folder holds the weights its reported metric was measured on
    best = frame.loc[frame["val_loss"].idxmin()]
    assert result.best_trial_id == best["trial_id"]
    assert result.best_metric == pytest.approx(best["val_loss"])
    model, _spec = load_checkpoint_model(result.best_checkpoint_dir)
    scores = evaluate_model(model, load_split_rows(str(dataset / "target" / "val.npz")))
    assert scores["loss"] == pytest.approx(result.best_metric, rel=1e-4)
    assert scores["accuracy"] == pytest.approx(best["val_accuracy"])
