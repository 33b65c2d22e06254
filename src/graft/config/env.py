"""The config's environment layer: ``GRAFT_<SECTION>__<KEY>=value`` variables as overrides.

A variable names a config key with ``__`` between its parts, in any case:
``GRAFT_TRACKING__TRACKING_URI=http://mlflow:5000`` is ``--set
tracking.tracking_uri=http://mlflow:5000``, and ``GRAFT_WORK_DIR=/data/run`` sets the
top-level ``work_dir``. Values are parsed as ``--set`` parses them (YAML: numbers, booleans,
lists). The layer sits above the config file and below ``--set``, so a deployment can set
its addresses once and a person can still override one key for one run.

Graft's other ``GRAFT_`` variables (``GRAFT_LOG_LEVEL``, ``GRAFT_TORCH_THREADS``, the deploy
scripts' ``GRAFT_NAMESPACE``...) name no config key and have no ``__``, so they are not read
here. A variable with ``__`` that names no key is refused, not ignored: a misspelt address
would otherwise send the runs somewhere else without a word.
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from typing import Union, get_args, get_origin

from pydantic import BaseModel

from graft.config import GraftConfig
from graft.errors import ConfigError

UNION_TYPES = (Union, types.UnionType)
PREFIX = "GRAFT_"
SEPARATOR = "__"


def environment_overrides(environ: Mapping[str, str]) -> list[str]:
    """The ``--set`` texts that the ``GRAFT_`` config variables in ``environ`` stand for, in
    sorted variable order (so that one environment always gives one config)."""
    overrides = []
    for variable in sorted(environ):
        path = _config_path(variable)
        if path is not None:
            _check_path(variable, path)
            overrides.append(f"{'.'.join(path)}={environ[variable]}")
    return overrides


def environment_variable(key: str) -> str:
    """The variable that sets dotted ``key``: ``tracking.tracking_uri`` ->
    ``GRAFT_TRACKING__TRACKING_URI``."""
    return PREFIX + SEPARATOR.join(part.upper() for part in key.split("."))


def _config_path(variable: str) -> list[str] | None:
    if not variable.startswith(PREFIX):
        return None
    name = variable[len(PREFIX) :].lower()
    if SEPARATOR in name:
        return name.split(SEPARATOR)
    field = GraftConfig.model_fields.get(name)
    if field is None or _section(field.annotation) is not None:
        return None
    return [name]


def _union_members(annotation: object) -> tuple[object, ...]:
    """``X | Y`` -> (X, Y); any other annotation -> (annotation,)."""
    return get_args(annotation) if get_origin(annotation) in UNION_TYPES else (annotation,)


def _section(annotation: object) -> type[BaseModel] | None:
    """The model a field holds: ``Model`` or ``Model | None``."""
    members = _union_members(annotation)
    models = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
    return models[0] if len(models) == 1 else None


def _is_mapping(annotation: object) -> bool:
    return any(m is dict or get_origin(m) is dict for m in _union_members(annotation))


def _check_path(variable: str, path: list[str]) -> None:
    model: type[BaseModel] = GraftConfig
    for depth, part in enumerate(path):
        if not part:
            raise ConfigError(f"{variable}: an empty key between '{SEPARATOR}' separators")
        field = model.model_fields.get(part)
        if field is None:
            where = ".".join(path[:depth]) or "the config"
            raise ConfigError(
                f"{variable}: {where} has no key '{part}'; its keys are "
                f"{', '.join(model.model_fields)}"
            )
        section = _section(field.annotation)
        if section is None:
            if depth < len(path) - 1 and not _is_mapping(field.annotation):
                raise ConfigError(
                    f"{variable}: {'.'.join(path[: depth + 1])} is a value, not a section"
                )
            # a value, or a mapping whose own keys the schema checks when it validates
            return
        if depth == len(path) - 1:
            raise ConfigError(
                f"{variable}: {'.'.join(path)} is a section; name one of its keys, e.g. "
                f"{environment_variable('.'.join([*path, next(iter(section.model_fields))]))}"
            )
        model = section
