"""What ``graft run`` shows while the pipeline runs: a spinner with the running stage's name
and elapsed time, then one line per finished stage (``✓ pretrain  42.1 s``); for a failed
stage, the end of its log and the log's path. The stages' own output is in their log files
(:mod:`graft.kfp.stage_logs`)."""

from __future__ import annotations

import io
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import get_args

from rich.console import Console, RenderableType
from rich.live import Live
from rich.spinner import Spinner
from rich.text import Text

from graft.config import StageName
from graft.kfp.stage_logs import SUCCEEDED, StageOutcome, log_tail

FAILURE_TAIL_LINES = 20
_NAME_WIDTH = max(len(name) for name in get_args(StageName))
_MARKS: dict[StageOutcome, tuple[str, str]] = {
    "done": ("✓", "green"),
    "cached": ("✓", "green"),
    "failed": ("✗", "red"),
    "stopped": ("■", "yellow"),
}


def wall_time(seconds: float) -> str:
    """``42.1 s`` under a minute, ``3 min 05 s`` above."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    return f"{whole // 60} min {whole % 60:02d} s"


def stage_line(stage: str, outcome: StageOutcome, seconds: float) -> Text:
    """``✓ pretrain           42.1 s``; a stage that did not finish says how it ended."""
    mark, colour = _MARKS[outcome]
    line = Text.assemble((f"{mark} ", colour), f"{stage:<{_NAME_WIDTH}}  {wall_time(seconds):>10}")
    if outcome == "cached":
        line.append("  cached (an earlier run's outputs)", style="dim")
    elif outcome != "done":
        line.append(f"  {outcome}", style=f"bold {colour}")
    return line


class _RunningStage:
    """The live line: one Spinner kept across refreshes (its frame follows its own clock)."""

    def __init__(self, stage: str, clock: Callable[[], float]) -> None:
        self._stage, self._clock, self._started = stage, clock, clock()
        self._spinner = Spinner("dots", style="cyan")

    def __rich__(self) -> RenderableType:
        self._spinner.update(text=f"{self._stage}  {wall_time(self._clock() - self._started)}")
        return self._spinner


class StageProgress:
    """A :class:`graft.kfp.stage_logs.StageListener` that draws on ``console``.

    ``console`` must not write through ``sys.stderr``/descriptor 2: those point at a stage's
    log while it runs (see :func:`terminal_console`). Off a terminal (CI, a pipe) the spinner
    draws nothing and only the finished lines appear.
    """

    def __init__(
        self,
        console: Console,
        tail_lines: int = FAILURE_TAIL_LINES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.console = console
        self.tail_lines = tail_lines
        self._clock = clock
        self._live: Live | None = None

    def stage_started(self, stage: str, log: Path) -> None:
        # redirect_*=False: the log router owns sys.stdout/sys.stderr while a stage runs
        self._live = Live(
            _RunningStage(stage, self._clock),
            console=self.console,
            transient=True,
            refresh_per_second=4,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._live.start()

    def stage_finished(self, stage: str, outcome: StageOutcome, seconds: float, log: Path) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
        self.console.print(stage_line(stage, outcome, seconds), highlight=False)
        if outcome == "failed":
            tail = log_tail(log, self.tail_lines)
            if tail:
                self.console.print(f"  last {len(tail)} lines of its log:", style="dim")
                for line in tail:
                    # the log keeps KFP's colour codes: render them, never parse them as markup
                    self.console.print(Text.from_ansi(line), highlight=False, soft_wrap=True)
        if outcome not in SUCCEEDED:
            self.console.print(f"  full log: {log}", highlight=False, soft_wrap=True)


@contextmanager
def terminal_console() -> Iterator[Console]:
    """A Console on a duplicate of this process's stderr, taken before the log router points
    descriptor 2 at a log file: the display keeps reaching the terminal during a stage."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):
        # stderr is not a descriptor (pytest's capture, a notebook): the router cannot move it
        yield Console(file=sys.stderr)
        return
    encoding = getattr(sys.stderr, "encoding", None) or "utf-8"
    with os.fdopen(os.dup(fd), "w", buffering=1, encoding=encoding, errors="replace") as stream:
        yield Console(file=stream)
