"""Population Based Training over the finetune (``tune.scheduler=pbt``).

A PBT trial trains in segments of ``tune.pbt.perturbation_interval`` epochs. Each segment is
one fit (in the trial's actor, or on Ray Train: ``tune.trial_runner``) that starts from the
weights the trial holds (the pretrained backbone at first, then its own last segment's, or a
donor trial's after an exploit) and trains the segment's share of the finetune phases with a
fresh optimizer. After each segment the trial reports one Tune checkpoint (weights, spec,
cumulative history and the epoch count), so Ray's ``PopulationBasedTraining`` can restart a
weak trial from a strong trial's checkpoint with perturbed hyperparameters; the restarted
trial continues the epoch count of the checkpoint it got. The config's ``tune.pbt``
docstring lists the simplifications.
"""

from __future__ import annotations

import json
import logging
import shutil
import uuid
from dataclasses import asdict, dataclass
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
from graft.train.local_fit import fit_here
from graft.train.loop_session import LocalSession
from graft.train.model_dir import HISTORY_FILE, MODEL_FILE
from graft.train.request import FitRequest
from graft.tune.space import to_tune_space
from graft.tune.trial import (
    TIME_ATTR,
    SearchInputs,
    TrialStart,
    start_trial,
    trial_device,
    trial_fit_run,
    trial_storage,
)

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
# a trial run's metric pbt.<key>: the value of tune.space key <key> each segment trained under
PBT_PARAM_PREFIX = "pbt."


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


def run_pbt_trial(params: dict[str, Any], search: SearchInputs) -> None:
    """One PBT trial: segments of fits, a Tune checkpoint after each, in one MLflow run."""
    from ray import tune

    from graft.train.request import phases_for
    from graft.train.stage_requests import finetune_request

    trial = start_trial(params, search, TRIAL_OVERRIDES)
    config, logger, trial_dir = trial.config, trial.logger, trial.dir
    model_dir = trial_dir / "model"
    store = trial_storage(search.trials_store, trial_dir)
    # the fresh target model; its starting weights are replaced below when resuming
    request = finetune_request(
        config, search.dataset_dir, search.pretrained_dir, trial_dir, trial.run_id
    )
    assert request.init_weights_path is not None
    init_weights = Path(request.init_weights_path)
    state, history, lineage = _trial_start_state(trial, tune.get_checkpoint(), init_weights)
    phases = phases_for(config.finetune)
    total = sum(p.epochs for p in phases)
    files = _SegmentFiles(model_dir, init_weights, store)
    try:
        while state.epochs_done < total:
            state, rows = _fit_segment(trial, request, state, phases, total, store, model_dir)
            history.extend(rows)
            _report_segment(trial, state, rows, history, lineage, files, total)
    except BaseException:
        logger.terminate("KILLED")
        raise
    logger.terminate("FINISHED")


@dataclass(frozen=True)
class _SegmentFiles:
    """Where a PBT trial keeps its segments: its model folder (the Tune checkpoint), the next
    segment's starting weights and the trial's Ray Train storage."""

    model_dir: Path
    init_weights: Path
    store: TrainStorage


def _trial_start_state(
    trial: TrialStart, checkpoint: Any, init_weights: Path
) -> tuple[SegmentState, list[dict[str, float]], list[dict[str, Any]]]:
    """Where the trial starts: from scratch, or from the Tune ``checkpoint`` PBT gave it (its
    own or, after an exploit, a donor's, whose weights replace ``init_weights``). Returns the
    segment state, the history so far and the trial's exploit lineage."""
    trial_id, applied, logger = trial.trial_id, trial.applied, trial.logger
    history: list[dict[str, float]] = []
    lineage: list[dict[str, Any]] = []
    if checkpoint is None:
        logger.params(applied)
        return SegmentState(epochs_done=0, trained_by=trial_id), history, lineage
    with checkpoint.as_directory() as ckpt_dir:
        state = start_from_checkpoint(Path(ckpt_dir), init_weights)
        history = json.loads((Path(ckpt_dir) / HISTORY_FILE).read_text())
    if state.trained_by != trial_id:
        lineage = record_exploit(trial.dir, state.trained_by, state.epochs_done, applied)
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
    elif (trial.dir / LINEAGE_FILE).exists():
        lineage = json.loads((trial.dir / LINEAGE_FILE).read_text())
    return state, history, lineage


def _fit_segment(
    trial: TrialStart,
    request: FitRequest,
    state: SegmentState,
    phases: list[PhaseConfig],
    total: int,
    store: TrainStorage,
    model_dir: Path,
) -> tuple[SegmentState, list[dict[str, float]]]:
    """Train the segment after ``state`` (one fit, here or on Ray Train as ``tune.trial_runner``
    says); its epoch rows on the whole finetune's scale and the state after it."""
    from graft.train.fit import fit

    config, trial_id = trial.config, trial.trial_id
    length = min(config.tune.pbt.perturbation_interval, total - state.epochs_done)
    first_phase, segment = segment_phases(phases, state.epochs_done, length)
    # a fresh Train run per segment start: never resume a run an exploit cut short
    run_name = f"trial-{trial_id}-e{state.epochs_done}-{uuid.uuid4().hex[:6]}"
    segment_request = request.model_copy(
        update={
            "phases": segment,
            # a new shuffle per segment; the epochs are logged here, on the whole scale
            "seed": config.seed + state.epochs_done,
            "mlflow_run_id": None,
        }
    )
    if config.tune.in_trainable:
        # in this trial's actor; the trial reports the whole segment itself (_report_segment)
        session = LocalSession(device_name=trial_device(config))
        result = fit_here(segment_request, session, model_dir)
    else:
        run = trial_fit_run(config, store, run_name, model_dir, num_to_keep=1)
        result = fit(segment_request, run)
        store.remove(run_name)
    rows = [continued(row, state, first_phase) for row in result.history]
    after = SegmentState(
        epochs_done=state.epochs_done + length,
        trained_by=trial_id,
        steps=rows[-1]["steps"],
        examples_seen=rows[-1]["examples_seen"],
    )
    return after, rows


def _report_segment(
    trial: TrialStart,
    state: SegmentState,
    rows: list[dict[str, float]],
    history: list[dict[str, float]],
    lineage: list[dict[str, Any]],
    files: _SegmentFiles,
    total: int,
) -> None:
    """Log a segment's epochs to the trial's run, save its Tune checkpoint, make its weights
    the next segment's start and report the last epoch to Tune with the checkpoint."""
    from ray import tune

    config, logger, model_dir = trial.config, trial.logger, files.model_dir
    for row in rows:
        logger.metrics(row, step=int(row["epoch"]))
    logger.metrics(
        {f"{PBT_PARAM_PREFIX}{k}": v for k, v in _numeric(trial.applied).items()},
        step=state.epochs_done,
    )
    state.save(model_dir)
    (model_dir / HISTORY_FILE).write_text(json.dumps(history))
    shutil.copyfile(model_dir / MODEL_FILE, files.init_weights)  # the next segment's start
    tune.report(
        {
            **rows[-1],
            # where the search's driver finds this model, on whichever node it runs
            "checkpoint_path": files.store.publish(model_dir, "model")
            if config.ray.shared_train_storage
            else str(model_dir),
            "fit_complete": float(state.epochs_done >= total),
            "stopped_early": 0.0,
            "pbt_exploits": float(len(lineage)),
            "pbt_restored_from": lineage[-1]["donor"] if lineage else "",
        },
        checkpoint=tune.Checkpoint.from_directory(str(model_dir)),
    )
