"""A one-worker fit in this process: the training loop that Ray Train runs on every DDP worker
(graft.train.recipe), run here on a :class:`~graft.train.loop_session.LocalSession`, with no
worker group to start.

A Tune trial of one worker trains this way inside its own trainable (graft.tune.trial), and a
one-worker pretrain or finetune stage in the stage's own process (:func:`fit_in_process`,
``*.runner``): a Ray Train fit would start a controller and a worker process that imports
torch, 10-25 s on 2 cores, for a fit that trains in seconds. Same loop, same seeds, same
checkpoints, hence the same weights (tests/integration/test_trial_runners.py and
test_stage_runners.py compare them tensor by tensor).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from graft.errors import TrainingError
from graft.train.fit import FitResult
from graft.train.loop_session import LocalSession
from graft.train.model_dir import write_model_files
from graft.train.recipe import WorkerFit
from graft.train.request import FitRequest, FitRun, LocalInputs

log = logging.getLogger(__name__)

# the checkpoints of an in-process fit: <storage>/<run name>/<CHECKPOINT_FOLDER>_<epoch report>
CHECKPOINT_FOLDER = "checkpoint"


def fit_here(request: FitRequest, session: LocalSession, output_dir: Path) -> FitResult:
    """Train ``request`` in this process; the final (best-restored) model goes to
    ``output_dir`` as :func:`graft.train.fit.fit` leaves it there. A ``session`` holding a
    checkpoint resumes from it."""
    worker = WorkerFit(request, LocalInputs(tuple(request.input_paths())), session)
    worker.run()
    history = list(worker.state.history)
    # the weights of the last checkpoint: nothing trains after it (a phase that ends
    # restores its best weights before its checkpoint)
    write_model_files(output_dir, worker.model.state_dict(), request.spec_json, history)
    return FitResult(
        model_dir=str(output_dir),
        history=history,
        final_metrics=dict(history[-1]) if history else {},
    )


@dataclass(frozen=True)
class FolderCheckpoint:
    """A checkpoint folder on local disk, read as a Ray ``Checkpoint`` is
    (:class:`~graft.train.loop_session.LocalSession` only calls ``as_directory``)."""

    path: Path

    @contextmanager
    def as_directory(self) -> Iterator[str]:
        yield str(self.path)


class CheckpointKeeper:
    """The checkpoints of one in-process fit in ``folder``: each epoch report's copied in,
    the newest ``num_to_keep`` kept (as Ray Train's ``CheckpointConfig`` keeps them)."""

    def __init__(self, folder: Path, num_to_keep: int) -> None:
        self.folder = folder
        self.num_to_keep = num_to_keep

    def saved(self) -> list[Path]:
        """The kept checkpoints, oldest first."""
        if not self.folder.is_dir():
            return []
        found = [p for p in self.folder.glob(f"{CHECKPOINT_FOLDER}_*") if _index(p) is not None]
        return sorted(found, key=lambda p: _index(p) or 0)

    def latest(self) -> FolderCheckpoint | None:
        saved = self.saved()
        return FolderCheckpoint(saved[-1]) if saved else None

    def keep(self, metrics: dict[str, float], folder: str | None) -> None:
        """A LocalSession's ``report_to``: keep the epoch's checkpoint, if it has one."""
        del metrics  # the loop logs its metrics itself; a checkpoint is all this keeps
        if folder is None:
            return
        saved = self.saved()
        index = (_index(saved[-1]) or 0) + 1 if saved else 1
        target = self.folder / f"{CHECKPOINT_FOLDER}_{index:06d}"
        # copy to a side name first: a fit killed mid-copy leaves no half checkpoint behind
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(folder, partial)
        partial.rename(target)
        for old in [*saved, target][: -self.num_to_keep]:
            shutil.rmtree(old, ignore_errors=True)


def _index(path: Path) -> int | None:
    number = path.name.removeprefix(f"{CHECKPOINT_FOLDER}_")
    return int(number) if number.isdigit() else None


def fit_in_process(request: FitRequest, run: FitRun) -> FitResult:
    """A one-worker stage fit in this process, with what :func:`graft.train.fit.fit` gives a
    Ray Train fit: checkpoints kept under ``run.storage``/``run.run_name`` (a rerun with the
    same name resumes from the newest), up to ``run.max_failures`` restarts from the newest
    checkpoint after a failure, and the final model in ``run.output_dir``. Local storage
    only: the stage picks Ray Train for S3 (graft.stages.training)."""
    if run.storage.filesystem is not None:
        raise TrainingError(
            f"an in-process fit keeps its checkpoints on local disk, but run '{run.run_name}' "
            f"stores them at {run.storage.path} on S3: use the stage's Ray Train runner"
        )
    keeper = CheckpointKeeper(Path(run.storage.join(run.run_name)), run.num_to_keep)
    failures = 0
    while True:
        session = LocalSession(report_to=keeper.keep, checkpoint=keeper.latest())
        try:
            result = fit_here(request, session, run.output_dir)
            break
        except Exception as exc:
            failures += 1
            if failures > run.max_failures:
                raise TrainingError(
                    f"training run '{run.run_name}' failed: {exc} (after {failures - 1} "
                    f"restart(s) from its checkpoint, checkpoint.max_failures={run.max_failures})"
                ) from exc
            restart_from = keeper.latest()
            log.warning(
                "training run '%s' failed (%s): restart %d of %d, from %s",
                run.run_name,
                exc,
                failures,
                run.max_failures,
                restart_from.path if restart_from else "the start",
            )
    latest = keeper.latest()
    if latest is None:
        raise TrainingError(f"training run '{run.run_name}' finished without a checkpoint")
    result.checkpoint_path = str(latest.path)
    return result
