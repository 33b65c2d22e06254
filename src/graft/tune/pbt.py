"""Population Based Training over the finetune (``tune.scheduler=pbt``).

A PBT trial trains in segments of ``tune.pbt.perturbation_interval`` epochs. Each segment is
one Ray Train fit that starts from the weights the trial holds (the pretrained backbone at
first, then its own last segment's, or a donor trial's after an exploit) and trains the
segment's share of the finetune phases with a fresh optimizer. After each segment the trial
reports one Tune checkpoint (weights, spec, cumulative history and the epoch count), so
Ray's ``PopulationBasedTraining`` can restart a weak trial from a strong trial's checkpoint
with perturbed hyperparameters; the restarted trial continues the epoch count of the
checkpoint it got. The config's ``tune.pbt`` docstring lists the simplifications.
"""

from __future__ import annotations

import json
import logging
import shutil
import uuid
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from graft.config import (
    GraftConfig,
    PhaseConfig,
    SearchDimension,
)
from graft.errors import ConfigError
from graft.io.ray_runtime import TrainStorage
from graft.train.loop import HISTORY_FILE, MODEL_FILE
from graft.tune.space import to_tune_space
from graft.tune.trial import TIME_ATTR, TRIAL_CPU, start_trial, trial_storage

log = logging.getLogger(__name__)

STATE_FILE = "pbt_state.json"
LINEAGE_FILE = "pbt_lineage.json"
# PBT replaces weak trials itself, and a segment's report must describe the weights it hands on
TRIAL_OVERRIDES: dict[str, Any] = {
    "finetune.early_stopping.enabled": False,
    "finetune.early_stopping.restore_best": False,
}
# MLflow tags of a trial run that was restarted from another trial's checkpoint
RESTORED_FROM_TAG = "graft.pbt.restored_from"
RESTORED_AT_EPOCH_TAG = "graft.pbt.restored_from_epoch"
EXPLOITS_TAG = "graft.pbt.exploits"


@dataclass
class SegmentState:
    """What a PBT checkpoint carries besides the weights: how far training got, who trained
    the last segment, and the per-fit counters a next segment continues."""

    epochs_done: int
    trained_by: str
    steps: float = 0.0
    examples_seen: float = 0.0

    def save(self, directory: Path) -> None:
        (directory / STATE_FILE).write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, directory: Path) -> SegmentState:
        return cls(**json.loads((directory / STATE_FILE).read_text()))


class ClipToSpace:
    """PBT's ``custom_explore_fn``: PBT perturbs a value by x0.8 or x1.2, which can leave
    ``tune.space``; clip it back to the dimension's bounds (ints stay ints)."""

    def __init__(self, space: dict[str, SearchDimension]) -> None:
        self.space = dict(space)

    def __call__(self, config: dict[str, Any]) -> dict[str, Any]:
        for key, dim in self.space.items():
            if dim.type == "choice" or key not in config:
                continue
            assert dim.low is not None and dim.high is not None
            value = min(max(float(config[key]), dim.low), dim.high)
            config[key] = round(value) if dim.type == "int" else value
        return config


def pbt_mutations(space: dict[str, SearchDimension]) -> dict[str, Any]:
    """``hyperparam_mutations`` for every key of ``tune.space``: a choice as its list of values
    (PBT moves to a neighbour), the others as their Tune domains (PBT scales and resamples)."""
    domains = to_tune_space(space)
    return {
        key: list(dim.values or []) if dim.type == "choice" else domains[key]
        for key, dim in space.items()
    }


def make_pbt_scheduler(config: GraftConfig) -> Any:
    from graft.tune.pbt_scheduler import ResumablePBT

    pbt = config.tune.pbt
    return ResumablePBT(
        time_attr=TIME_ATTR,
        perturbation_interval=pbt.perturbation_interval,
        hyperparam_mutations=pbt_mutations(config.tune.space),
        quantile_fraction=pbt.quantile_fraction,
        resample_probability=pbt.resample_probability,
        custom_explore_fn=ClipToSpace(config.tune.space),
        synch=pbt.synch,
    )


def segment_phases(
    phases: list[PhaseConfig], start: int, length: int
) -> tuple[int, list[PhaseConfig]]:
    """The phases of epochs ``[start, start + length)`` of the phase plan, each cut to its
    share of the segment, and the plan's index of the first of them."""
    first: int | None = None
    cut: list[PhaseConfig] = []
    offset = 0
    for index, phase in enumerate(phases):
        low, high = max(start, offset), min(start + length, offset + phase.epochs)
        if low < high:
            first = index if first is None else first
            cut.append(phase.model_copy(update={"epochs": high - low}))
        offset += phase.epochs
    if first is None:
        raise ValueError(f"epochs [{start}, {start + length}) are outside the {offset}-epoch plan")
    return first, cut


def start_from_checkpoint(checkpoint_dir: Path, init_weights: Path) -> SegmentState:
    """Make a PBT checkpoint's weights the next segment's starting weights: they replace the
    fresh target model's ``init_weights`` (what ``finetune_request`` wrote for the workers)."""
    donor = torch.load(checkpoint_dir / MODEL_FILE, weights_only=True, map_location="cpu")
    fresh = torch.load(init_weights, weights_only=True, map_location="cpu")
    wanted = {key: tuple(t.shape) for key, t in fresh.items()}
    found = {key: tuple(t.shape) for key, t in donor.items()}
    if wanted != found:
        differing = sorted(set(wanted) ^ set(found)) or sorted(
            key for key in wanted if wanted[key] != found[key]
        )
        raise ConfigError(
            "tune.scheduler=pbt: the checkpoint to continue from has another architecture than "
            f"this trial's model ({', '.join(differing[:5])} differ); PBT can only mutate keys "
            "that keep the weights' shapes: remove architecture keys (widths, blocks, family) "
            "from tune.space"
        )
    torch.save(donor, init_weights)
    return SegmentState.load(checkpoint_dir)


def record_exploit(
    trial_dir: Path, donor: str, at_epoch: int, params: dict[str, Any]
) -> list[dict[str, Any]]:
    """Append an exploit to the trial's lineage file (kept across its actor restarts); a
    restart from the same donor checkpoint is not counted twice. Returns the lineage."""
    path = trial_dir / LINEAGE_FILE
    lineage: list[dict[str, Any]] = json.loads(path.read_text()) if path.exists() else []
    if not lineage or (lineage[-1]["donor"], lineage[-1]["at_epoch"]) != (donor, at_epoch):
        lineage.append({"donor": donor, "at_epoch": at_epoch, "params": params})
        path.write_text(json.dumps(lineage))
    return lineage


def continued(row: dict[str, float], state: SegmentState, first_phase: int) -> dict[str, float]:
    """A segment fit's epoch metrics on the trial's whole-finetune scale."""
    return {
        **row,
        "epoch": row["epoch"] + state.epochs_done,
        "phase": row["phase"] + first_phase,
        "steps": row["steps"] + state.steps,
        "examples_seen": row["examples_seen"] + state.examples_seen,
    }


def _numeric(values: dict[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in values.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }


def run_pbt_trial(
    params: dict[str, Any],
    *,
    base_config_json: str,
    dataset_dir: str,
    pretrained_dir: str,
    tune_run_id: str,
    trials_dir: str,
    experiment_name: str = "",
    trials_store: TrainStorage | None = None,
) -> None:
    """One PBT trial: segments of fits, a Tune checkpoint after each, in one MLflow run."""
    from ray import tune

    from graft.train.fit import fit
    from graft.train.loop import phases_for
    from graft.train.requests import finetune_request

    trial = start_trial(
        params, base_config_json, tune_run_id, trials_dir, experiment_name, TRIAL_OVERRIDES
    )
    config, logger, trial_dir, trial_id = trial.config, trial.logger, trial.dir, trial.trial_id
    applied, run_id = trial.applied, trial.run_id
    model_dir = trial_dir / "model"
    store = trial_storage(trials_store, trial_dir)
    # the fresh target model; its starting weights are replaced below when resuming
    request = finetune_request(config, dataset_dir, pretrained_dir, trial_dir, run_id)
    assert request.init_weights_path is not None
    init_weights = Path(request.init_weights_path)
    history: list[dict[str, float]] = []
    lineage: list[dict[str, Any]] = []
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        state = SegmentState(epochs_done=0, trained_by=trial_id)
        logger.params(applied)
    else:
        with checkpoint.as_directory() as ckpt_dir:
            state = start_from_checkpoint(Path(ckpt_dir), init_weights)
            history = json.loads((Path(ckpt_dir) / HISTORY_FILE).read_text())
        if state.trained_by != trial_id:
            lineage = record_exploit(trial_dir, state.trained_by, state.epochs_done, applied)
            log.info(
                "trial %s continues from trial %s's checkpoint at epoch %d with %s",
                trial_id,
                state.trained_by,
                state.epochs_done,
                applied,
            )
            logger.tags(
                {
                    RESTORED_FROM_TAG: state.trained_by,
                    RESTORED_AT_EPOCH_TAG: str(state.epochs_done),
                    EXPLOITS_TAG: str(len(lineage)),
                }
            )
            logger.metrics({"pbt.exploit": 1.0}, step=state.epochs_done)
        elif (trial_dir / LINEAGE_FILE).exists():
            lineage = json.loads((trial_dir / LINEAGE_FILE).read_text())
    phases = phases_for(config.finetune)
    total = sum(p.epochs for p in phases)
    try:
        while state.epochs_done < total:
            length = min(config.tune.pbt.perturbation_interval, total - state.epochs_done)
            first_phase, segment = segment_phases(phases, state.epochs_done, length)
            # a fresh Train run per segment start: never resume a run an exploit cut short
            run_name = f"trial-{trial_id}-e{state.epochs_done}-{uuid.uuid4().hex[:6]}"
            result = fit(
                replace(
                    request,
                    phases=[p.model_dump() for p in segment],
                    # a new shuffle per segment; the epochs are logged here, on the whole scale
                    seed=config.seed + state.epochs_done,
                    mlflow_run_id=None,
                ),
                num_workers=config.tune.workers_per_trial,
                storage_path=store.path,
                storage_filesystem=store.filesystem,
                run_name=run_name,
                output_dir=model_dir,
                max_failures=config.finetune.checkpoint.max_failures,
                num_to_keep=1,
                resources=config.finetune.resources,
                cpu_discount=TRIAL_CPU / config.tune.workers_per_trial,
            )
            store.remove(run_name)
            rows = [continued(row, state, first_phase) for row in result.history]
            state = SegmentState(
                epochs_done=state.epochs_done + length,
                trained_by=trial_id,
                steps=rows[-1]["steps"],
                examples_seen=rows[-1]["examples_seen"],
            )
            history.extend(rows)
            for row in rows:
                logger.metrics(row, step=int(row["epoch"]))
            logger.metrics(
                {f"pbt.{k}": v for k, v in _numeric(applied).items()}, step=state.epochs_done
            )
            state.save(model_dir)
            (model_dir / HISTORY_FILE).write_text(json.dumps(history))
            shutil.copyfile(model_dir / MODEL_FILE, init_weights)  # the next segment's start
            tune.report(
                {
                    **rows[-1],
                    # where the search's driver finds this model, on whichever node it runs
                    "checkpoint_path": store.publish(model_dir, "model")
                    if config.ray.shared_train_storage
                    else str(model_dir),
                    "fit_complete": float(state.epochs_done >= total),
                    "stopped_early": 0.0,
                    "pbt_exploits": float(len(lineage)),
                    "pbt_restored_from": lineage[-1]["donor"] if lineage else "",
                },
                checkpoint=tune.Checkpoint.from_directory(str(model_dir)),
            )
    except BaseException:
        logger.terminate("KILLED")
        raise
    logger.terminate("FINISHED")
