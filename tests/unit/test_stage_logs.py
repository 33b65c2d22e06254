"""Per-stage log files of a local run: what reaches a stage's file, what reaches the terminal,
and what a failure reports. The last tests run a real two-task KFP pipeline (lightweight
components, no Ray, well under a second) through the seam the router wraps."""

# no `from __future__ import annotations`: KFP reads the components' annotations as types
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from kfp import dsl, local

from graft.errors import PipelineStageError
from graft.kfp.local_run import task_outputs
from graft.kfp.stage_logs import (
    StageLogRouter,
    StageOutcome,
    last_exception_line,
    log_tail,
    output_to,
    stage_log_path,
)

# Recorded from the KFP 2.17 local SubprocessRunner: a task whose component raised.
KFP_FAILED_TASK_LOG = """\
20:52:16.898 - INFO - Executing task \x1b[96m'fail'\x1b[0m
20:52:16.899 - INFO - Streamed logs:

    [KFP Executor 2026-12-05 20:52:17,036 INFO]: Got executor_input:
    {
        "inputs": {
            "parameterValues": {
                "word": "hi!"
            }
        }
    }
    Traceback (most recent call last):
      File "/work/main/.venv/lib/python3.11/site-packages/kfp/dsl/executor.py", line 453, in execute
        result = self.func(**func_kwargs)
                 ^^^^^^^^^^^^^^^^^^^^^^^^
      File "/tmp/tmp.FBQOpwAaZz/ephemeral_component.py", line 8, in fail
        raise graft.errors.TrainingError(f"loss did not fall on one batch")
    graft.errors.TrainingError: loss did not fall on one batch
    \n
20:52:17.080 - ERROR - Task \x1b[96m'fail'\x1b[0m finished with status \x1b[91mFAILURE\x1b[0m
--------------------------------------------------------------------------------
"""


class Recorder:
    """A StageListener that remembers what it heard."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.logs_closed_with: dict[str, str] = {}

    def stage_started(self, stage: str, log: Path) -> None:
        self.events.append(("started", stage))

    def stage_finished(self, stage: str, outcome: StageOutcome, seconds: float, log: Path) -> None:
        assert seconds >= 0
        self.events.append((outcome, stage))
        self.logs_closed_with[stage] = log.read_text()


def test_output_to_sends_every_kind_of_write_to_the_file(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "stage.log"
    print("before")
    with output_to(log):
        print("python stdout")
        print("python stderr", file=sys.stderr)
        os.write(1, b"descriptor 1\n")
        os.write(2, b"descriptor 2\n")
        # a child inherits the descriptors, as the KFP task's Ray driver output would
        subprocess.run([sys.executable, "-c", "print('child process')"], check=True)
        handler = logging.StreamHandler(sys.stdout)  # as kfp.local makes its own, mid-run
        logging.getLogger("graft.test").addHandler(handler)
        logging.getLogger("graft.test").warning("a logging line")
        logging.getLogger("graft.test").removeHandler(handler)
    print("after")

    written = log.read_text()
    for text in (
        "python stdout",
        "python stderr",
        "descriptor 1",
        "descriptor 2",
        "child process",
        "a logging line",
    ):
        assert text in written
    terminal = capfd.readouterr()
    assert terminal.out.split() == ["before", "after"]
    assert terminal.err == ""


def test_output_to_nests_and_restores_the_outer_file(tmp_path: Path) -> None:
    outer, inner = tmp_path / "pipeline.log", tmp_path / "stage.log"
    with output_to(outer):
        print("outer first")
        with output_to(inner):
            print("inner")
        print("outer again")
    assert outer.read_text() == "outer first\nouter again\n"
    assert inner.read_text() == "inner\n"


def test_log_tail_drops_kfps_trailer_and_finds_the_cause(tmp_path: Path) -> None:
    log = tmp_path / "pretrain.log"
    log.write_text(KFP_FAILED_TASK_LOG)
    tail = log_tail(log, 3)
    assert tail[-1].endswith("finished with status \x1b[91mFAILURE\x1b[0m")  # rule dropped
    assert len(tail) == 3
    assert last_exception_line(log_tail(log, 20)) == (
        "graft.errors.TrainingError: loss did not fall on one batch"
    )
    assert last_exception_line(["all good", "    ValueError: x", "done"]) == "ValueError: x"
    ray = "ray.exceptions.RayTaskError(TrainingError): ray::train() (pid=1)"
    assert last_exception_line([ray]) == ray
    assert last_exception_line(["no traceback here", "Error count: 3 is fine"]) is None
    assert log_tail(tmp_path / "missing.log", 20) == []


def test_router_refuses_two_stages_at_once(tmp_path: Path) -> None:
    router = StageLogRouter(tmp_path, Recorder())

    def outer() -> tuple[dict[str, object], object]:
        router._run_stage("inner", lambda: ({}, None))
        return {}, None

    with pytest.raises(PipelineStageError, match="one task at a time"):
        router._run_stage("outer", outer)


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def shout(word: str) -> str:
    import sys

    print(f"component says {word}")
    print("component warns", file=sys.stderr)
    return word + "!"


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def refuse(word: str) -> str:
    raise ValueError(f"cannot use {word}")


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def report(status: dsl.PipelineTaskFinalStatus) -> str:
    return status.state


@dsl.pipeline(name="two-tasks")
def two_tasks(word: str = "hi") -> str:
    return shout(word=shout(word=word).output).output


@dsl.pipeline(name="second-fails")
def second_fails(word: str = "hi") -> str:
    return refuse(word=shout(word=word).output).output


@dsl.pipeline(name="handled")
def handled(word: str = "hi") -> None:
    with dsl.ExitHandler(report()):
        shout(word=shout(word=word).output)


@pytest.fixture
def local_runner(tmp_path: Path) -> Iterator[Path]:
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(tmp_path / "kfp"),
        raise_on_error=True,
    )
    yield tmp_path / "logs"
    # kfp.local keeps its settings process-wide: later tests start without them
    local.config.LocalExecutionConfig.instance = None


def test_real_kfp_run_writes_each_task_to_its_log_and_nothing_to_the_terminal(
    local_runner: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    recorder = Recorder()
    with StageLogRouter(local_runner, recorder).routing():
        result = two_tasks(word="hi")
    assert result.output == "hi!!"
    assert recorder.events == [
        ("started", "shout"),
        ("done", "shout"),
        ("started", "shout-2"),
        ("done", "shout-2"),
    ]
    for stage, word in (("shout", "hi"), ("shout-2", "hi!")):
        text = stage_log_path(local_runner, stage).read_text()
        assert recorder.logs_closed_with[stage] == text  # whole and closed when announced
        assert "Executing task" in text  # the runner's own lines
        assert "Got executor_input" in text  # the executor's config dump
        assert f"component says {word}\n" in text and "component warns" in text
    assert "Running pipeline" in (local_runner / "pipeline.log").read_text()
    terminal = capfd.readouterr()
    assert terminal.out + terminal.err == ""


def test_real_kfp_failure_names_the_stage_and_the_cause(
    local_runner: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    recorder = Recorder()
    router = StageLogRouter(local_runner, recorder)
    with pytest.raises(PipelineStageError) as raised, router.routing():
        second_fails(word="hi")
    assert str(raised.value) == "stage 'refuse' failed: ValueError: cannot use hi!"
    assert recorder.events[-1] == ("failed", "refuse")
    assert router.failed is not None and router.failed.log == local_runner / "refuse.log"
    assert "Traceback" in router.failed.log.read_text()
    terminal = capfd.readouterr()
    assert "Traceback" not in terminal.out + terminal.err


def test_an_exit_task_is_routed_and_a_task_inside_the_handler_hands_its_outputs_on(
    local_runner: Path,
) -> None:
    """What Graft's pipeline needs of the seam: its stages run inside a dsl.ExitHandler, so
    export's summary comes from the task (local_run.task_outputs), not from the pipeline."""
    recorder = Recorder()
    with StageLogRouter(local_runner, recorder).routing(), task_outputs("shout-2") as outputs:
        handled(word="hi")
    assert outputs == {"Output": "hi!!"}
    assert recorder.events[-2:] == [("started", "report"), ("done", "report")]
    assert "Output: 'SUCCEEDED'" in stage_log_path(local_runner, "report").read_text()
