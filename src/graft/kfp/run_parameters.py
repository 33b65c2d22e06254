"""The pipeline parameters a person fills in the KFP UI, and the one config they resolve to.

Every component calls :func:`effective_config` with the same parameters, so every task of a
run works from the same config. The steps, each winning over the ones before:

1. ``config_json``: the full config compiled into the pipeline (or sent by ``graft submit``).
2. ``preset``: empty, or the preset the pipeline was compiled with, keeps ``config_json``.
   Another preset rebases it: every key ``config_json`` holds at the compiled preset's value
   takes the new preset's value; the keys it changed (tracking server, ``work_dir``,
   ``--set`` at compile time) stay.
3. ``data_source``: when not empty, replaces ``data.source``.
4. ``overrides``: ``key.path=value`` strings applied in order, as ``--set`` does.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from graft.config import (
    DEFAULT_PRESET,
    PRESETS,
    GraftConfig,
    apply_overrides,
    config_from_json,
    load_config,
    parse_override,
    validate_config,
)
from graft.config.load import sets_class_split, without_preset_class_split
from graft.errors import ConfigError

PRECEDENCE = (
    "Each task resolves one config from the run's parameters, each step winning over the ones "
    "before: (1) config_json; (2) preset: empty or the compiled preset keeps config_json as it "
    "is, another preset gives every key config_json holds at the compiled preset's value the "
    "new preset's value (the keys config_json changed, such as the tracking server, stay); "
    "(3) data_source, when not empty, replaces data.source; (4) overrides, key.path=value "
    "strings applied in order like --set."
)


def parameter_help(compiled_preset: str) -> dict[str, str]:
    """What each pipeline parameter does, as the KFP UI shows it under the parameter's name."""
    return {
        "config_json": (
            "The full Graft config as JSON: the compiled one, or the one `graft submit` sends. "
            "The other parameters are applied over it."
        ),
        "preset": (
            f"Preset to run: {', '.join(PRESETS)}. Left at '{compiled_preset}' (the compiled "
            "one) or empty, config_json is used as it is; another preset replaces every value "
            f"config_json shares with '{compiled_preset}' and keeps the ones it changed."
        ),
        "data_source": (
            "Replaces data.source when not empty: builtin:digits, builtin:fashion_mnist, "
            "s3://bucket/key.parquet or .npz, or a path inside the pods."
        ),
        "overrides": (
            'Config keys set last, as `--set` does: a JSON list such as ["finetune.epochs=3", '
            '"tune.num_samples=4"].'
        ),
    }


@dataclass(frozen=True)
class RunParameters:
    """The UI parameters of one run (see the module docstring for their order)."""

    preset: str = ""
    data_source: str = ""
    overrides: Sequence[str] = ()
    compiled_preset: str = DEFAULT_PRESET


def effective_config(config_json: str, parameters: RunParameters | None = None) -> GraftConfig:
    """The config a task runs with: ``config_json``, then preset, data_source and overrides.

    Bad input raises one :class:`ConfigError` line that names the parameter and the fix.
    """
    given = parameters or RunParameters()
    config = config_from_json(config_json)
    if given.preset and given.preset != given.compiled_preset:
        if given.preset not in PRESETS:
            raise ConfigError(
                f"pipeline parameter preset: unknown preset '{given.preset}'; choose one of "
                f"{', '.join(PRESETS)}, or leave it at '{given.compiled_preset}'"
            )
        config = rebase_on_preset(config, given.compiled_preset, given.preset)
    overrides = _checked_overrides(given.overrides)
    if not given.data_source.strip() and not overrides:
        return config
    data = config.model_dump(mode="json")
    if given.data_source.strip():
        data["data"]["source"] = given.data_source.strip()
        preset = load_config(preset=given.preset or given.compiled_preset).model_dump(mode="json")
        # a split config_json holds on its preset's dataset is the preset's (loading drops it
        # for other data): drop it for the new source too, unless an override names one
        if (
            config.data.source == preset["data"]["source"]
            and data["data"]["transfer"] == preset["data"]["transfer"]
            and not sets_class_split({}, overrides)
        ):
            data = without_preset_class_split(data, preset)
    try:
        return validate_config(apply_overrides(data, overrides))
    except ConfigError as exc:
        raise ConfigError(f"pipeline parameters data_source/overrides: {exc}") from None


def rebase_on_preset(config: GraftConfig, from_preset: str, to_preset: str) -> GraftConfig:
    """``config`` moved from one preset to another: the keys it holds at ``from_preset``'s
    values take ``to_preset``'s, the keys it changed keep its own.

    A key is a field of the schema; a list or a mapping (``tune.space``) is one key, kept or
    taken whole, so a rebase never mixes two presets' search spaces.
    """
    reference = load_config(preset=from_preset)
    data = load_config(preset=to_preset).model_dump(mode="json")
    own = config.model_dump(mode="json")
    for path in _changed_keys(config, reference):
        target, source = data, own
        for part in path[:-1]:
            target, source = target[part], source[part]
        target[path[-1]] = source[path[-1]]
    try:
        return validate_config(data)
    except ConfigError as exc:
        raise ConfigError(
            f"pipeline parameter preset: '{to_preset}' with config_json's own keys: {exc}"
        ) from None


def _changed_keys(
    config: BaseModel, reference: BaseModel, prefix: tuple[str, ...] = ()
) -> Iterator[tuple[str, ...]]:
    for name in type(config).model_fields:
        value, base = getattr(config, name), getattr(reference, name)
        if isinstance(value, BaseModel) and type(value) is type(base):
            yield from _changed_keys(value, base, (*prefix, name))
        elif value != base:
            yield (*prefix, name)


def _checked_overrides(overrides: Sequence[Any]) -> list[str]:
    checked = []
    for item in overrides:
        if not isinstance(item, str):
            raise ConfigError(
                f"pipeline parameter overrides: item {item!r} is not a string; write each as "
                '"key.path=value", e.g. ["finetune.epochs=3"]'
            )
        try:
            path, _ = parse_override(item)
        except ConfigError as exc:
            raise ConfigError(f"pipeline parameter overrides: {exc}") from None
        if path == ["training_preset"]:
            # load_config lays a recipe under the user's keys; a resolved config_json no longer
            # tells those keys apart, so the recipe could not be applied as `--set` applies it
            raise ConfigError(
                "pipeline parameter overrides: training_preset cannot be changed on a compiled "
                "config; pass --set training_preset=NAME to `graft compile` or `graft submit`"
            )
        checked.append(item)
    return checked
