"""Building a ``GraftConfig``: presets, YAML files, ``--set`` overrides and JSON."""

from __future__ import annotations

import json
import logging
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from graft.config.graft_config import GraftConfig, _unknown_training_preset
from graft.config.training_presets import TRAINING_PRESETS
from graft.errors import ConfigError

config_logger = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- loading

PRESETS = ("default", "tiny")
DEFAULT_PRESET = "default"


def preset_path(name: str) -> Path:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset '{name}'; choose one of {', '.join(PRESETS)}")
    return Path(str(resources.files("graft.config").joinpath("presets", f"{name}.yaml")))


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist; pass an existing YAML file")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def _deep_merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b=c`` -> (["a", "b"], c) with c parsed as YAML (numbers, lists, booleans)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like key.path=value")
    key, raw = text.split("=", 1)
    if not key.strip():
        raise ConfigError(f"override '{text}' has an empty key")
    try:
        value = yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError:
        value = raw
    if "#" in raw and not isinstance(value, list | dict) and not raw.startswith(("'", '"')):
        # YAML reads ' #...' as a comment: 'data.source=/d/run #2.npz' would lose its tail and
        # '#1.npz' would become null. A value is one word of the command line, never a comment.
        value = raw
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    result = json.loads(json.dumps(data))
    for text in overrides:
        path, value = parse_override(text)
        node = result
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override '{text}': '{part}' is a value, not a section")
            node = child
        node[path[-1]] = value
    return result


def validate_config(data: dict[str, Any]) -> GraftConfig:
    try:
        return GraftConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"invalid config: {problems}") from None


def training_preset_data(name: str) -> dict[str, Any]:
    """The partial config of training preset ``name`` (a deep copy: safe to mutate)."""
    if name not in TRAINING_PRESETS:
        raise ConfigError(_unknown_training_preset(name))
    data: dict[str, Any] = json.loads(json.dumps(TRAINING_PRESETS[name]))
    return data


def load_config(
    path: str | Path | None = None,
    preset: str | None = None,
    overrides: list[str] | None = None,
) -> GraftConfig:
    """Schema defaults < preset YAML < ``training_preset`` < user YAML < ``--set`` overrides.

    ``training_preset`` may come from the preset, the user YAML or ``--set``; once known, its
    partial config is laid over the preset and the user YAML and overrides are laid over it
    again, so every key the user wrote explicitly wins over the recipe.
    """
    base = _read_yaml(preset_path(preset or DEFAULT_PRESET))
    user = _read_yaml(Path(path)) if path is not None else {}
    data = apply_overrides(_deep_merge(base, user), overrides or [])
    name = data.get("training_preset")
    if name is not None:
        if not isinstance(name, str) or name not in TRAINING_PRESETS:
            raise ConfigError(_unknown_training_preset(name))
        recipe = training_preset_data(name)
        data = apply_overrides(_deep_merge(_deep_merge(base, recipe), user), overrides or [])
        config = validate_config(data)
        config_logger.info(
            "training preset %s applied under explicit keys; resolved model %s, pretrain "
            "optimizer %s, schedule %s",
            name,
            config.model.model_dump(mode="json"),
            config.pretrain.optimizer.model_dump(mode="json"),
            config.pretrain.schedule.name,
        )
        return config
    return validate_config(data)


def config_from_json(text: str) -> GraftConfig:
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        # besides a JSONDecodeError: a number past Python's 4300-digit limit (ValueError), or
        # arrays nested deeper than the interpreter's stack (RecursionError)
        raise ConfigError(f"config parameter is not valid JSON: {exc}") from None
    return validate_config(data)


def with_overrides(config: GraftConfig, overrides: dict[str, Any]) -> GraftConfig:
    """A copy of ``config`` with dotted-key overrides (tune trials use this)."""
    data = config.model_dump(mode="json")
    texts = [f"{key}={json.dumps(value)}" for key, value in overrides.items()]
    return validate_config(apply_overrides(data, texts))
