"""The search space of ``tune.space``, as Ray Tune's domains and Optuna's define-by-run
space, and which sampled keys a trial applies (conditional keys: ``when``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from graft.config import GraftConfig, SearchDimension
from graft.errors import ConfigError


def to_tune_space(space: dict[str, SearchDimension], grid: bool = False) -> dict[str, Any]:
    """Ray Tune domains; ``grid`` turns choice and int dimensions into ``tune.grid_search``."""
    from ray import tune

    converted: dict[str, Any] = {}
    for key, dim in space.items():
        if dim.type == "choice":
            values = list(dim.values or [])
            converted[key] = tune.grid_search(values) if grid else tune.choice(values)
            continue
        assert dim.low is not None and dim.high is not None  # the schema guarantees bounds
        if dim.type == "int":
            low, high = int(dim.low), int(dim.high)
            converted[key] = (
                tune.grid_search(list(range(low, high + 1)))
                if grid
                else tune.randint(low, high + 1)
            )
        elif grid:
            raise ConfigError(
                f"tune.searcher=grid cannot enumerate the continuous dimension '{key}'; make it "
                "'choice' with explicit values"
            )
        elif dim.type == "uniform":
            converted[key] = tune.uniform(dim.low, dim.high)
        else:
            converted[key] = tune.loguniform(dim.low, dim.high)
    return converted


class OptunaSpace:
    """Optuna define-by-run space: unconditional keys first, then each conditional key only
    when its condition holds on the values already suggested."""

    def __init__(self, space: dict[str, SearchDimension]) -> None:
        self.space = dict(sorted(space.items(), key=lambda item: item[1].when is not None))

    def __call__(self, trial: Any) -> None:
        suggested: dict[str, Any] = {}
        for key, dim in self.space.items():
            if not dim.is_active(suggested):
                continue
            if dim.type == "choice":
                suggested[key] = trial.suggest_categorical(key, list(dim.values or []))
                continue
            assert dim.low is not None and dim.high is not None
            if dim.type == "int":
                suggested[key] = trial.suggest_int(key, int(dim.low), int(dim.high))
            else:
                suggested[key] = trial.suggest_float(
                    key, dim.low, dim.high, log=dim.type == "loguniform"
                )


def optuna_distributions(
    space: dict[str, SearchDimension], params: Mapping[str, Any]
) -> dict[str, Any]:
    """The Optuna distribution of each key of ``params``: the one :class:`OptunaSpace`'s
    suggestion of that key records, so a finished trial added to a study (a warm start's prior
    result) and the trials it suggests share their distributions."""
    import optuna.distributions as od

    distributions: dict[str, Any] = {}
    for key in params:
        dim = space[key]
        if dim.type == "choice":
            distributions[key] = od.CategoricalDistribution(list(dim.values or []))
            continue
        assert dim.low is not None and dim.high is not None
        if dim.type == "int":
            distributions[key] = od.IntDistribution(int(dim.low), int(dim.high))
        else:
            distributions[key] = od.FloatDistribution(
                dim.low, dim.high, log=dim.type == "loguniform"
            )
    return distributions


def active_params(space: dict[str, SearchDimension], params: dict[str, Any]) -> dict[str, Any]:
    """The sampled values a trial applies: searched keys whose condition (if any) holds."""
    return {k: v for k, v in params.items() if k in space and space[k].is_active(params)}


def param_space(config: GraftConfig) -> dict[str, Any]:
    """What the Tuner gets as ``param_space`` (empty for Optuna: its space is define-by-run)."""
    if config.tune.searcher == "optuna":
        return {}
    return to_tune_space(config.tune.space, grid=config.tune.searcher == "grid")
