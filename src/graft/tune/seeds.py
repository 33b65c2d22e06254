"""A past trial's configuration made to fit the current ``tune.space``, as a seed of a new
search (``tune.warm_start_top_k``).

The space may have changed since the past search ran, so each key of a seed is checked
against the dimension it now has:

- a key no longer in ``tune.space`` is dropped;
- a number outside the dimension's bounds is clipped to the nearest bound (a ``loguniform``
  value at or below 0 goes to ``low``, which is > 0); an ``int`` dimension's value is rounded;
- a ``choice`` value no longer among the dimension's values is dropped (there is no nearest
  category), as is a value that does not read as the dimension's type;
- a conditional key whose condition the seed's own values now rule out is dropped.

Every change is logged as a warning naming the key and both values. A dropped key, and a key
the past search did not search, is left to the searcher: Optuna and random search sample it;
HyperOpt takes only whole points, so :func:`completed_seed` draws it at random from its
dimension (as HyperOpt's own first trials are drawn).
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from graft.config import SearchDimension

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SeedChange:
    """One key of a seed that the current space changed: ``new`` None means dropped."""

    key: str
    old: Any
    new: Any
    why: str

    def describe(self) -> str:
        new = "dropped" if self.new is None else repr(self.new)
        return f"'{self.key}': {self.old!r} -> {new} ({self.why})"


def fitted_seed(
    logged: Mapping[str, str],
    space: Mapping[str, SearchDimension],
    label: str = "seed",
    warn: bool = True,
) -> tuple[dict[str, Any], list[SeedChange]]:
    """``logged`` (a trial's parameters as MLflow holds them: strings) fitted to ``space``:
    the seed and what changed on the way, each change logged as a warning under ``label``
    (unless not ``warn``)."""
    seed: dict[str, Any] = {}
    changes: list[SeedChange] = []
    for key, text in logged.items():
        dim = space.get(key)
        if dim is None:
            changes.append(SeedChange(key, text, None, "no longer in tune.space"))
            continue
        value, change = _fitted_value(key, text, dim)
        if change is not None:
            changes.append(change)
        if value is not None:
            seed[key] = value
    for key in list(seed):
        if not _may_apply(space[key], seed):
            changes.append(SeedChange(key, seed.pop(key), None, f"inactive: {space[key].when}"))
    for change in changes if warn else []:
        log.warning("warm start, %s: %s", label, change.describe())
    return seed, changes


def _fitted_value(key: str, text: str, dim: SearchDimension) -> tuple[Any, SeedChange | None]:
    """The value ``text`` takes in ``dim`` (None: dropped) and the change, if any."""
    if dim.type == "choice":
        for allowed in dim.values or []:
            if str(allowed) == text or _same_number(allowed, text):
                return allowed, None
        return None, SeedChange(key, text, None, f"not one of the values {dim.values}")
    try:
        number = float(text)
    except ValueError:
        return None, SeedChange(key, text, None, f"not a number, but a '{dim.type}' dimension")
    if not math.isfinite(number):
        return None, SeedChange(key, text, None, "not a finite number")
    assert dim.low is not None and dim.high is not None  # the schema guarantees bounds
    low: float = int(dim.low) if dim.type == "int" else dim.low
    high: float = int(dim.high) if dim.type == "int" else dim.high
    value: float = min(max(round(number) if dim.type == "int" else number, low), high)
    old: float = int(number) if dim.type == "int" and number.is_integer() else number
    if value == number:
        return value, None
    inside = low <= number <= high
    why = "rounded to a whole number" if inside else f"clipped to the bounds [{low:g}, {high:g}]"
    return value, SeedChange(key, old, value, why)


def _same_number(allowed: Any, text: str) -> bool:
    """Whether ``text`` is the number ``allowed`` written another way (a PBT trial's last
    value of a numeric choice is logged as a float metric: 32 as "32.0")."""
    if isinstance(allowed, bool) or not isinstance(allowed, int | float):
        return False
    try:
        return float(text) == allowed
    except ValueError:
        return False


def _may_apply(dim: SearchDimension, seed: Mapping[str, Any]) -> bool:
    """False only when the seed holds the key ``dim`` depends on, with another value."""
    condition = dim.condition()
    return condition is None or condition[0] not in seed or dim.is_active(dict(seed))


def completed_seed(
    seed: Mapping[str, Any], space: Mapping[str, SearchDimension], rng: random.Random
) -> dict[str, Any]:
    """``seed`` with every key of ``space`` it lacks drawn at random from its dimension, for a
    searcher that takes only whole points (HyperOpt)."""
    whole = dict(seed)
    for key, dim in space.items():
        if key in whole:
            continue
        if dim.type == "choice":
            whole[key] = rng.choice(list(dim.values or []))
            continue
        assert dim.low is not None and dim.high is not None
        if dim.type == "int":
            whole[key] = rng.randint(int(dim.low), int(dim.high))
        elif dim.type == "loguniform":
            whole[key] = math.exp(rng.uniform(math.log(dim.low), math.log(dim.high)))
        else:
            whole[key] = rng.uniform(dim.low, dim.high)
    return whole
