"""Each stage of a local pipeline run writes its whole output to its own log file.

The KFP local runner prints everything to this process's stdout: its executor dumps, the
component's stdout/stderr (piped from the task's subprocess and re-printed line by line),
its own ``logging`` lines. :class:`StageLogRouter` sends that to ``<log_dir>/<stage>.log``
per stage and ``<log_dir>/pipeline.log`` in between, and tells a :class:`StageListener`
when each stage starts and ends, so the terminal can show one line per stage instead.

How, and why this way: the router wraps one KFP function, ``task_executor.
execute_single_task``, which both local orchestrators call through its module once per
task (retries and cache hits included) with the task's name, and which returns its
status. That gives exact stage boundaries and outcomes without parsing KFP's coloured log
text, whose wording is not an interface. During a stage it points file descriptors 1 and 2
*and* ``sys.stdout``/``sys.stderr`` at the stage's file: the descriptors catch writes from
C code and from objects that hold the original streams, the Python-level swap catches
writes when ``sys.stdout`` is not backed by descriptor 1 (pytest, notebooks).
``tests/unit/test_stage_logs.py`` runs a real two-task KFP pipeline through the seam, so a
KFP upgrade that moves it fails there.
"""

from __future__ import annotations

import functools
import inspect
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from graft.errors import PipelineStageError

# cached: KFP's cache served the task's outputs (it did not run); stopped: an exception ended
# the wait
StageOutcome = Literal["done", "cached", "failed", "stopped"]
SUCCEEDED: frozenset[StageOutcome] = frozenset({"done", "cached"})
PIPELINE_LOG = "pipeline.log"
# a traceback's end: "graft.errors.TrainingError: message", "KeyboardInterrupt",
# "ray.exceptions.RayTaskError(TrainingError): ray::..."
_EXCEPTION_LINE = re.compile(
    r"^(?:[A-Za-z_]\w*\.)*[A-Z]\w*(?:Error|Exception|Exit|Interrupt)(?:\([\w.]+\))?(?::\s.*)?$"
)
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class StageListener(Protocol):
    """What learns when a stage starts and ends (the CLI's progress display)."""

    def stage_started(self, stage: str, log: Path) -> None: ...

    def stage_finished(self, stage: str, outcome: StageOutcome, seconds: float, log: Path) -> None:
        """Called once per started stage, after its log file is closed."""


@dataclass(frozen=True)
class StageFailure:
    stage: str
    log: Path

    def error(self) -> PipelineStageError:
        cause = last_exception_line(log_tail(self.log, 200))
        detail = f": {cause}" if cause else f"; its log is {self.log}"
        return PipelineStageError(f"stage {self.stage!r} failed{detail}")


def stage_log_path(log_dir: Path, stage: str) -> Path:
    return log_dir / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', stage)}.log"


@contextmanager
def output_to(path: Path) -> Iterator[None]:
    """Send this process's stdout and stderr (descriptors and Python streams) to ``path``,
    truncated, until the block ends; nests (the inner block restores the outer file)."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()  # what was written before the block belongs where it was going
    saved = (os.dup(1), os.dup(2))
    try:
        with open(path, "w", buffering=1, encoding="utf-8", errors="replace") as log:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            try:
                with redirect_stdout(log), redirect_stderr(log):
                    yield
            finally:
                log.flush()
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
    finally:
        os.close(saved[0])
        os.close(saved[1])


def log_tail(path: Path, lines: int) -> list[str]:
    """The last ``lines`` lines of a log, without the blank lines and horizontal rules KFP
    prints after a task's output."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    kept = text.splitlines()
    while kept and not _ANSI.sub("", kept[-1]).strip(" -"):
        kept.pop()
    return kept[-lines:] if lines > 0 else []


def last_exception_line(lines: list[str]) -> str | None:
    """The ``Type: message`` line that ends the last traceback in ``lines``, if any."""
    for line in reversed(lines):
        text = _ANSI.sub("", line).strip()
        if _EXCEPTION_LINE.match(text):
            return text
    return None


class StageLogRouter:
    """Routes a local KFP run's output to per-stage log files (see the module docstring)."""

    def __init__(
        self,
        log_dir: Path,
        listener: StageListener,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log_dir = log_dir
        self.listener = listener
        self.failed: StageFailure | None = None
        self._clock = clock
        self._running: str | None = None
        self._served_from_cache = False  # the running stage's outputs came from KFP's cache
        self._lock = threading.Lock()

    @contextmanager
    def routing(self) -> Iterator[None]:
        """Route output for the block; a stage failure surfaces as PipelineStageError
        (KFP's own RuntimeError names the task only)."""
        from kfp.local.orchestrator import task_executor

        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.failed = None
        original = task_executor.execute_single_task
        signature = inspect.signature(original)

        @functools.wraps(original)  # another wrapper's signature is then the original's
        def execute_routed(*args: Any, **kwargs: Any) -> Any:
            stage = str(signature.bind(*args, **kwargs).arguments["task_name"])
            return self._run_stage(stage, lambda: original(*args, **kwargs))

        task_executor.execute_single_task = execute_routed
        try:
            with output_to(self.log_dir / PIPELINE_LOG), self._watching_cache_hits():
                yield
        except RuntimeError as exc:
            if self.failed is None:
                raise
            raise self.failed.error() from exc
        finally:
            task_executor.execute_single_task = original

    @contextmanager
    def _watching_cache_hits(self) -> Iterator[None]:
        """Note when KFP's local cache answers a lookup of the running task with its outputs:
        the task executor returns them without running it (the second seam, next to
        ``execute_single_task``; tests/unit/test_pipeline_exit_handler.py sees a cached task
        reported as such)."""
        from kfp.local.cache import LocalCache

        original = LocalCache.get

        @functools.wraps(original)
        def get_watched(cache: Any, key: str) -> Any:
            found = original(cache, key)
            if found is not None:
                self._served_from_cache = True
            return found

        LocalCache.get = get_watched
        try:
            yield
        finally:
            LocalCache.get = original

    def _run_stage(self, stage: str, run: Callable[[], tuple[Any, Any]]) -> tuple[Any, Any]:
        with self._lock:
            if self._running is not None:
                # descriptors are process-wide: two tasks at once would mix their logs
                raise PipelineStageError(
                    f"stage {stage!r} started while {self._running!r} runs; per-stage logs "
                    "need one task at a time: run with --verbose"
                )
            self._running = stage
        log = stage_log_path(self.log_dir, stage)
        self.listener.stage_started(stage, log)
        started = self._clock()
        outcome: StageOutcome = "stopped"
        self._served_from_cache = False
        try:
            with output_to(log):
                outputs, status = run()
            # kfp.local.status.Status is an Enum: compare by name, not by importing it here
            if getattr(status, "name", "") != "SUCCESS":
                outcome = "failed"
            else:
                outcome = "cached" if self._served_from_cache else "done"
            return outputs, status
        finally:
            self._running = None
            if outcome not in SUCCEEDED and self.failed is None:
                # the first failure is the cause: the exit task runs after it, and may fail too
                self.failed = StageFailure(stage, log)
            self.listener.stage_finished(stage, outcome, self._clock() - started, log)
