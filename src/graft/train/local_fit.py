"""A one-worker fit in this process: the training loop that Ray Train runs on every DDP worker
(graft.train.recipe), run here on a :class:`~graft.train.loop_session.LocalSession`, with no
worker group to start.

A Tune trial of one worker trains this way inside its own trainable (graft.tune.trial): a
Ray Train fit would start a worker process that imports torch, 15-25 s on 2 cores, for a
trial that trains in seconds. Same loop, same seeds, same checkpoints, hence the same weights
(tests/integration/test_trial_runners.py compares them tensor by tensor).
"""

from __future__ import annotations

from pathlib import Path

from graft.train.fit import FitResult
from graft.train.loop_session import LocalSession
from graft.train.model_dir import write_model_files
from graft.train.recipe import WorkerFit
from graft.train.request import FitRequest, LocalInputs


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
