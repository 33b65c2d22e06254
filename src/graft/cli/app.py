"""``graft``: run the pipeline on this machine, compile it for a KFP server, open MLflow.

Each command group has its module; this one builds the app from them, in the order ``--help``
lists the commands, and turns Graft's errors into one line and an exit code. The commands
import the stages, Ray, KFP and torch inside their bodies, so that ``graft --help`` and the
light commands start in about a second rather than the ten that importing the stages takes."""

from __future__ import annotations

import logging
import os
import signal
import sys

import typer
from rich.markup import escape

from graft.cli.compile import COMPILE_HELP, compile_, show_config
from graft.cli.kfp_server import runs, schedule, submit, upload
from graft.cli.monitor import monitor
from graft.cli.options import console
from graft.cli.run import run
from graft.cli.serve import serve
from graft.cli.stage import rayjob, stage_
from graft.cli.tune import lr_find, tune_
from graft.cli.ui import ui
from graft.config.runtime import (
    DEFAULT_LOG_LEVEL,
    LOG_LEVEL_ENV,
    RAY_TRAIN_ENV_DEFAULTS,
    RAY_TRAIN_V2_ENV,
)
from graft.errors import GraftError
from graft.io.termination import Terminated, sigterm_interrupts

app = typer.Typer(
    name="graft",
    help=(
        "Graft: a Kubernetes-native training pipeline. data-prep -> pretrain -> "
        "transfer-finetune -> tune -> evaluate -> export, as KFP v2 components training with "
        "Ray Train/Tune and tracking in MLflow. Runs on this machine with no cluster "
        "(`graft run`) or on Kubeflow (`graft compile`, then upload pipelines/training.yaml)."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# on this machine
app.command()(run)
app.command(name="compile", help=COMPILE_HELP)(compile_)
app.command(name="config")(show_config)
app.command()(ui)
app.command()(serve)
# on a KFP server
app.command()(upload)
app.command()(submit)
app.command()(schedule)
app.command()(runs)
# one stage at a time
app.command(name="tune")(tune_)
app.command(name="stage")(stage_)
app.command(name="rayjob")(rayjob)
app.command(name="lr-find")(lr_find)
# before retraining: has the data drifted from the champion's?
app.command()(monitor)


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _log_level() -> str:
    level = os.environ.get(LOG_LEVEL_ENV, DEFAULT_LOG_LEVEL).strip().upper()
    if level not in LOG_LEVELS:
        raise GraftError(
            f"{LOG_LEVEL_ENV}={os.environ[LOG_LEVEL_ENV]!r} is not a log level; use one of "
            f"{', '.join(LOG_LEVELS)} (any case)"
        )
    return level


def main() -> None:
    os.environ.setdefault(RAY_TRAIN_V2_ENV, RAY_TRAIN_ENV_DEFAULTS[RAY_TRAIN_V2_ENV])
    sigterm_interrupts()
    try:
        logging.basicConfig(level=_log_level())
        app()
    except Terminated as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        sys.exit(128 + signal.SIGTERM)
    except GraftError as exc:
        # escaped: a message may quote a log line with [brackets] that rich would parse
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        sys.exit(2)
    except RuntimeError as exc:
        # with --verbose KFP's local runner raises RuntimeError naming the failed task; its
        # log is above (a quiet run raises PipelineStageError, a GraftError)
        console.print(f"[red]error:[/red] {str(exc).splitlines()[0]}")
        sys.exit(1)


if __name__ == "__main__":
    main()
