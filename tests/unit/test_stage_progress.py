"""What `graft run` draws per stage: the finished line, the spinner, a failure's log tail."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from graft.cli.progress import StageProgress, stage_line, wall_time


def _console(terminal: bool = False) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=100, force_terminal=terminal, color_system=None), out


def test_stage_line_says_status_and_wall_time() -> None:
    assert wall_time(42.14) == "42.1 s"
    assert wall_time(185.9) == "3 min 05 s"
    done = stage_line("pretrain", "done", 42.14).plain
    assert done.startswith("✓ pretrain ") and done.endswith("42.1 s")
    assert "failed" not in done
    assert stage_line("pretrain", "failed", 3.0).plain.split()[-1] == "failed"
    assert stage_line("tune", "stopped", 3.0).plain.split()[-1] == "stopped"
    cached = stage_line("data-prep", "cached", 0.4).plain
    assert (
        cached.startswith("✓ data-prep ") and "0.4 s  cached (an earlier run's outputs)" in cached
    )
    # names line up: the time column starts at the same place for every stage
    assert len(stage_line("tune", "done", 1.0).plain) == len(
        stage_line("transfer-finetune", "done", 1.0).plain
    )


def test_a_finished_stage_is_one_line_off_a_terminal(tmp_path: Path) -> None:
    console, out = _console()
    progress = StageProgress(console)
    progress.stage_started("pretrain", tmp_path / "pretrain.log")
    progress.stage_finished("pretrain", "done", 42.1, tmp_path / "pretrain.log")
    assert out.getvalue().splitlines() == [stage_line("pretrain", "done", 42.1).plain]


def test_the_spinner_shows_the_stage_and_its_elapsed_time(tmp_path: Path) -> None:
    console, out = _console(terminal=True)
    times = iter([100.0, 112.0, 112.0, 112.0])
    progress = StageProgress(console, clock=lambda: next(times, 112.0))
    progress.stage_started("tune", tmp_path / "tune.log")
    assert progress._live is not None
    progress._live.refresh()
    assert "tune  12.0 s" in out.getvalue()
    progress.stage_finished("tune", "done", 12.0, tmp_path / "tune.log")
    assert progress._live is None
    assert out.getvalue().rstrip().endswith(stage_line("tune", "done", 12.0).plain)


def test_a_failed_stage_prints_its_log_tail_then_the_path(tmp_path: Path) -> None:
    log = tmp_path / "evaluate.log"
    body = [f"line {n}" for n in range(1, 41)]
    # as KFP ends a task's output: blank lines, its status line, a horizontal rule
    log.write_text(
        "\n".join(body)
        + "\n    \n\n12:00:00.000 - ERROR - Task 'evaluate' finished with status FAILURE\n"
        + "-" * 80
        + "\n"
    )
    console, out = _console()
    progress = StageProgress(console)
    progress.stage_started("evaluate", log)
    progress.stage_finished("evaluate", "failed", 7.5, log)
    lines = out.getvalue().splitlines()
    assert lines[0] == stage_line("evaluate", "failed", 7.5).plain
    assert lines[1].strip() == "last 20 lines of its log:"
    tail = lines[2:-1]
    assert len(tail) == 20
    assert tail[-1].endswith("finished with status FAILURE")
    assert tail[0] == "line 24" and tail[-4] == "line 40"
    assert lines[-1].strip() == f"full log: {log}"
