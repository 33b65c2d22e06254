"""Population Based Training over real Ray Train segments: weak trials restart from strong
trials' checkpoints with perturbed hyperparameters, epochs continue across segments and
exploits, and the best trial's model is the one its metric describes.

Synchronous PBT makes the exploits countable: at each perturbation point the whole population
is ranked, and with 2 or 3 trials and quantile 0.5 exactly one trial copies another.
Asynchronous PBT ranks a trial against whatever the others reported so far, so only "at least
one" holds; everything else is checked the same way. One population trains each trial on 2 DDP
workers, so an exploit hands a checkpoint from one worker group to another. A PBT search killed
part-way resumes each trial from its last checkpoint."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from killed_search import (
    kill_search_when,
    resume_killed_search,
    search_inputs,
    tune_stage_runs,
)
from search_helpers import search_on_own_ray

from graft.config import load_config
from graft.io import tracking
from graft.train.model_dir import load_checkpoint_model
from graft.train.rows import evaluate_model, load_split_rows
from graft.tune.pbt import EXPLOITS_TAG, RESTORED_AT_EPOCH_TAG, RESTORED_FROM_TAG
from graft.tune.runs import trial_runs

# slow: a population of Ray Train segments takes minutes here; `make test-all` runs it
pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(600)]

LR = "finetune.optimizer.lr"
TRIALS = 3
# LRs 4 decades apart: the losses differ enough that the bottom half copies the top half
SPACE = json.dumps({LR: {"type": "loguniform", "low": 1e-5, "high": 0.3}})


def _phases(epochs: int) -> str:
    """Two head-only epochs, then the rest with the whole net trainable."""
    return json.dumps(
        [
            {"trainable": "head", "epochs": 2},
            {"trainable": "all", "epochs": epochs - 2, "lr_scale": 0.5},
        ]
    )


@pytest.mark.parametrize(
    ("synch", "workers", "trials", "epochs"),
    [
        (True, 1, TRIALS, 3),
        # asynchronous PBT exploits only where a top trial's checkpoint was saved by the time
        # a bottom trial reports, which timing decides: 3 perturbation points per trial
        # instead of 2 make at least one exploit near certain
        (False, 1, TRIALS, 4),
        (True, 2, 2, 3),
    ],
    ids=["synchronous", "asynchronous", "synchronous-2-workers-per-trial"],
)
def test_pbt_exploits_weak_trials_and_continues_their_epochs(
    synch: bool,
    workers: int,
    trials: int,
    epochs: int,
    tmp_path: Path,
    untrained_model_dir: Callable[..., Path],
) -> None:
    config = load_config(
        preset="tiny",
        overrides=[
            f"work_dir={tmp_path / 'work'}",
            "tune.lr_finder.enabled=false",
            "tune.scheduler=pbt",
            "tune.searcher=random",
            f"tune.num_samples={trials}",
            f"tune.max_concurrent={trials}",
            f"tune.workers_per_trial={workers}",
            # asynchronous PBT copies only a trial that has reported by then: one-worker
            # trials in their trainables run all their epochs seconds apart here (as their
            # actors come up), with no one to copy; Ray Train segments, each starting its
            # worker, keep the population in step
            f"tune.trial_runner={'auto' if synch else 'ray_train'}",
            # the whole population trains at once: 3 or 4 workers on this 2-CPU local Ray
            "finetune.resources.cpus=0.5",
            "tune.metric=val_loss",
            "tune.pbt.perturbation_interval=1",
            "tune.pbt.quantile_fraction=0.5",
            "tune.pbt.resample_probability=0",
            f"tune.pbt.synch={str(synch).lower()}",
            f"tune.space={SPACE}",
            f"finetune.phases={_phases(epochs)}",
        ],
    )
    result, dataset, tune_run = search_on_own_ray(config, tmp_path, untrained_model_dir, "pbt-test")

    frame = pd.read_csv(result.trials_table)
    assert len(frame) == trials == result.num_trials
    # every trial trained the whole finetune: cumulative epochs, however often it was exploited
    assert frame["epoch"].tolist() == [epochs] * trials
    assert frame["fit_complete"].tolist() == [1.0] * trials
    assert frame["outcome"].tolist() == ["completed"] * trials
    assert result.total_epochs == trials * epochs
    assert result.num_stopped_early == 0
    # every optimizer step of every segment took a global batch of the trial's workers
    assert (frame["examples_seen"] / frame["steps"] == workers * config.finetune.batch_size).all()

    if synch:
        # one exploit per perturbation point (after each epoch but the last, which ends a trial)
        assert frame["pbt_exploits"].sum() == epochs - 1
    else:
        # the 1e-5-scale trial is ranked last once another trial has reported
        assert 1 <= frame["pbt_exploits"].sum() <= trials * (epochs - 1)
    exploited = frame[frame["pbt_exploits"] >= 1]
    client = tracking.client_for(config)
    runs = trial_runs(config, tune_run)
    assert set(runs) == set(frame["trial_id"])
    for _, row in exploited.iterrows():
        run = client.get_run(runs[row["trial_id"]])
        donor = run.data.tags[RESTORED_FROM_TAG]
        assert donor in runs and donor != row["trial_id"]
        assert donor == row["pbt_restored_from"]
        assert 1 <= int(run.data.tags[RESTORED_AT_EPOCH_TAG]) < epochs
        assert int(run.data.tags[EXPLOITS_TAG]) == row["pbt_exploits"]
        # the run's params are the trial's first hyperparameters; PBT moved it elsewhere
        initial_lr = float(run.data.params[LR])
        final_lr = float(row[f"config/{LR}"])
        assert final_lr != pytest.approx(initial_lr, rel=1e-6)
        assert 1e-5 <= final_lr <= 0.3
        lrs = client.get_metric_history(run.info.run_id, f"pbt.{LR}")
        assert lrs[-1].value == pytest.approx(final_lr)
        assert {m.value for m in lrs} != {final_lr}  # the LR schedule PBT applied is logged
        # every epoch of the whole finetune logged, on the trial's epoch scale
        logged = client.get_metric_history(run.info.run_id, "epoch")
        assert all(m.value == m.step for m in logged)
        steps = sorted(m.step for m in logged)
        if synch:  # the whole population is ranked at the same epoch: once each
            assert steps == list(range(1, epochs + 1))
        else:
            # a bottom trial may copy a donor checkpoint older than its own last epoch and
            # train (and log) the epochs after it again, or a newer one (of a donor that ran
            # ahead) whose epochs the donor logged: only exploits repeat or skip epochs.
            # Every epoch after the checkpoint it last continued from is its own
            restored_at = int(run.data.tags[RESTORED_AT_EPOCH_TAG])
            assert set(range(restored_at + 1, epochs + 1)) <= set(steps)
            assert set(steps) <= set(range(1, epochs + 1)) and 1 in steps
            assert len(steps) - len(set(steps)) <= row["pbt_exploits"] * (epochs - 1)

    # the best trial's model folder holds the weights its reported metric was measured on
    best = frame.loc[frame["val_loss"].idxmin()]
    assert result.best_trial_id == best["trial_id"]
    assert result.best_metric == pytest.approx(best["val_loss"])
    model, _spec = load_checkpoint_model(result.best_checkpoint_dir)
    scores = evaluate_model(model, load_split_rows(str(dataset / "target" / "val.npz")))
    assert scores["loss"] == pytest.approx(result.best_metric, rel=1e-4)
    assert scores["accuracy"] == pytest.approx(best["val_accuracy"])


def test_a_killed_pbt_search_resumes_each_trial_from_its_last_checkpoint(
    tmp_path: Path, untrained_model_dir: Callable[..., Path]
) -> None:
    epochs = 4
    settings = [
        f"work_dir={tmp_path / 'work'}",
        "tune.lr_finder.enabled=false",
        "tune.scheduler=pbt",
        "tune.searcher=random",
        f"tune.num_samples={TRIALS}",
        "tune.max_concurrent=3",
        "finetune.resources.cpus=0.5",
        "tune.metric=val_loss",
        "tune.pbt.perturbation_interval=1",
        "tune.pbt.quantile_fraction=0.5",
        "tune.pbt.resample_probability=0",
        # synchronous: exploits copy a checkpoint of the same epoch, and a resumed search must
        # not stall at its next perturbation point (graft.tune.pbt_scheduler)
        "tune.pbt.synch=true",
        f"tune.space={SPACE}",
        f"finetune.phases={_phases(epochs)}",
    ]
    config = load_config(preset="tiny", overrides=settings)
    dataset, pretrained = search_inputs(config, tmp_path, untrained_model_dir)
    out = tmp_path / "tune"
    # killed once every trial's checkpoint after epoch 2 is in the experiment state on disk
    killed = kill_search_when(
        lambda trials: len(trials) == TRIALS and min(t.epoch for t in trials.values()) >= 2,
        config,
        settings,
        dataset,
        pretrained,
        out,
        deadline_s=300,
    )
    assert not killed.finished, "the search ended before it could be interrupted"

    resume_killed_search(out, timeout_s=420)

    frame = pd.read_csv(out / "trials.csv")
    # the same population finished the whole finetune; PBT started no trial of its own
    assert set(frame["trial_id"]) == set(killed.trials)
    assert frame["epoch"].tolist() == [epochs] * TRIALS
    assert frame["fit_complete"].tolist() == [1.0] * TRIALS
    client = tracking.client_for(config)
    (stage_run,) = tune_stage_runs(config, killed.experiment)
    runs = trial_runs(config, stage_run.info.run_id)
    assert set(runs) == set(killed.trials)
    for trial_id in killed.trials:
        logged = [m.step for m in client.get_metric_history(runs[trial_id], "epoch")]
        assert sorted(set(logged)) == list(range(1, epochs + 1))
        # each trial continued from a checkpoint, not from scratch (that would log epoch 1
        # twice). The experiment state may hold a trial's last result without the checkpoint
        # that came with it (seen: a trial exploited at epoch 1 had reported epoch 2, but its
        # recorded checkpoint was still the donor's epoch-1 one), so a resumed trial may
        # train its last segment again: one epoch here
        assert logged.count(1) == 1, logged
        assert len(logged) - epochs <= 1, logged
        assert client.get_run(runs[trial_id]).info.status == "FINISHED"
