"""What every ``graft`` command shares: the console it reports on, the --config/--preset/--set
options and the config they resolve to."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from graft.config import GraftConfig, load_config
from graft.config.env import environment_overrides

# stderr: stdout carries what a script reads (a URL, a YAML, a GRAFT_STAGE_RESULT line)
console = Console(stderr=True)

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML file laid over the preset.")
]
PresetOption = Annotated[
    str | None, typer.Option("--preset", "-p", help="Base preset: default or tiny (fast).")
]
SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        "-s",
        help="Override one key, e.g. --set finetune.epochs=3 (repeat). Wins over the "
        "environment's GRAFT_<SECTION>__<KEY> variables (GRAFT_FINETUNE__EPOCHS=3), which win "
        "over --config.",
    ),
]


def layered_config(
    config: Path | None, preset: str | None, overrides: list[str] | None
) -> GraftConfig:
    """The preset, the config file, the ``GRAFT_<SECTION>__<KEY>`` environment, then --set."""
    return load_config(config, preset, [*environment_overrides(os.environ), *(overrides or [])])


def config_to_run_here(
    config: Path | None, preset: str | None, overrides: list[str] | None
) -> GraftConfig:
    """:func:`layered_config` with ``work_dir`` made absolute, for stages that run from here."""
    resolved = layered_config(config, preset, overrides)
    # Stages run in other processes (KFP tasks, Ray workers): pin the working folder.
    resolved.work_dir = str(Path(resolved.work_dir).resolve())
    return resolved
