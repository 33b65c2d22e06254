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


def sets_class_split(user: dict[str, Any], overrides: list[str]) -> bool:
    """Whether the user's YAML or an override names ``data.transfer.target_classes``."""
    section = user.get("data")
    transfer = section.get("transfer") if isinstance(section, dict) else None
    if isinstance(transfer, dict) and "target_classes" in transfer:
        return True
    for text in overrides:
        path, _ = parse_override(text)
        if path[:3] in (["data", "transfer", "target_classes"], ["data", "transfer"], ["data"]):
            return True
    return False


def without_preset_class_split(data: dict[str, Any], preset: dict[str, Any]) -> dict[str, Any]:
    """``data`` without the preset's A/B class split when it reads another dataset.

    A preset's ``data.transfer`` names classes of the preset's own built-in dataset (tiny's
    [3, 8] are digits): on the user's data it would fail or split at random. So when
    ``data.source`` is not the preset's, the split is off unless the user named one. The
    caller decides that the user did not (see :func:`sets_class_split`).
    """
    preset_data = preset.get("data") if isinstance(preset.get("data"), dict) else {}
    section = data.get("data")
    if not isinstance(section, dict) or not isinstance(preset_data, dict):
        return data
    preset_transfer = preset_data.get("transfer")
    transfer = section.get("transfer")
    if (
        not isinstance(preset_transfer, dict)
        or not preset_transfer.get("target_classes")
        or not isinstance(transfer, dict)
        or section.get("source", preset_data.get("source")) == preset_data.get("source")
    ):
        return data
    config_logger.info(
        "data.source %s is not the preset's %s: its class split %s is off; set "
        "data.transfer.target_classes to split this dataset's classes",
        section.get("source"),
        preset_data.get("source"),
        preset_transfer["target_classes"],
    )
    kept = {
        key: value
        for key, value in transfer.items()
        if key not in preset_transfer or value != preset_transfer[key]
    }
    kept.pop("target_classes", None)
    return {**data, "data": {**section, "transfer": kept}}


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
    if not sets_class_split(user, overrides or []):
        data = without_preset_class_split(data, base)
    name = data.get("training_preset")
    if name is not None:
        if not isinstance(name, str) or name not in TRAINING_PRESETS:
            raise ConfigError(_unknown_training_preset(name))
        recipe = training_preset_data(name)
        data = apply_overrides(_deep_merge(_deep_merge(base, recipe), user), overrides or [])
        if not sets_class_split(user, overrides or []):
            data = without_preset_class_split(data, base)
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
