"""``graft compile`` and ``graft config``: the resolved config, written into the KFP pipeline's
files or printed as YAML."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from graft.cli.options import ConfigOption, PresetOption, SetOption, console, layered_config
from graft.config import DEFAULT_IMAGE, DEFAULT_PRESET
from graft.kfp.run_parameters import PRECEDENCE

# typer takes a command's help from its docstring, which cannot hold PRECEDENCE's text
COMPILE_HELP = (
    "Write the KFP pipeline IR and one component spec per stage.\n\n"
    "The resolved config becomes the pipeline's default `config_json` parameter, and its "
    "`cluster` block sets each task's resources, accelerators, placement, retries, secrets, "
    "image pull secrets and /dev/shm. The pipeline also takes `preset` (default: the preset "
    "compiled with, --preset or default), `data_source` and `overrides`, which a person fills "
    "in the KFP UI.\n\n" + PRECEDENCE
)


def compile_(
    image: Annotated[
        str | None, typer.Option(help="Container image the components run in.")
    ] = None,
    pipelines_dir: Annotated[Path, typer.Option(help="Where training.yaml goes.")] = Path(
        "pipelines"
    ),
    components_dir: Annotated[Path, typer.Option(help="Where <stage>.yaml go.")] = Path(
        "components"
    ),
    config: ConfigOption = None,
    preset: PresetOption = None,
    set_: SetOption = None,
) -> None:
    from graft.kfp.compile import compile_all

    resolved = layered_config(config, preset, set_)
    written = compile_all(
        pipelines_dir, components_dir, image or DEFAULT_IMAGE, resolved, preset or DEFAULT_PRESET
    )
    for path in written:
        console.print(f"wrote {path}")


def show_config(
    config: ConfigOption = None,
    preset: PresetOption = None,
    set_: SetOption = None,
) -> None:
    """Print the resolved configuration (preset < file < GRAFT_ environment < --set) as YAML."""
    import yaml

    resolved = layered_config(config, preset, set_)
    typer.echo(yaml.safe_dump(resolved.model_dump(mode="json"), sort_keys=False))
