"""What a search config chooses to pick and stop trials: the searcher (Optuna TPE, HyperOpt,
random or grid), the scheduler (ASHA, asynchronous Hyperband, the median stopping rule, PBT
or none) and what else ends trials (an epoch budget, PBT's last epoch)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from graft.config import GraftConfig
from graft.tune.pbt import make_pbt_scheduler
from graft.tune.search_start import PriorResult, SearchStart
from graft.tune.seeds import completed_seed
from graft.tune.space import OptunaSpace, optuna_distributions
from graft.tune.trial import TIME_ATTR

# Ray's OptunaSearch loads the study of this name from the storage it is given
OPTUNA_STUDY = "graft-search"


def make_searcher(config: GraftConfig, start: SearchStart | None = None) -> Any:
    """The searcher, started as ``start`` says (graft.tune.search_start; None: cold). Its seeds
    (partial configurations) are its first suggestions, each in place of one of
    ``tune.num_samples``: Optuna and random search fill a seed's missing keys themselves;
    HyperOpt takes whole points only, so they are drawn at random here. The config refuses
    seeds for a grid. Only Optuna learns from the prior results: random search has nothing to
    learn, and HyperOpt's warm start would take them in place of the seeds."""
    from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter

    start = start or SearchStart()
    tune_cfg = config.tune
    rng_seed = start.searcher_seed(tune_cfg.seed)
    points = [dict(seed) for seed in start.seeds] or None
    if tune_cfg.searcher in ("random", "grid"):
        return BasicVariantGenerator(
            points_to_evaluate=points,
            random_state=rng_seed,
            max_concurrent=tune_cfg.max_concurrent,
        )
    if tune_cfg.searcher == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        searcher: Any = OptunaSearch(
            space=OptunaSpace(tune_cfg.space),
            metric=tune_cfg.metric,
            mode=tune_cfg.mode,
            sampler=tpe_sampler(config, rng_seed),
            points_to_evaluate=points,
            study_name=OPTUNA_STUDY,
            storage=study_with_prior(config, start.prior) if start.prior else None,
        )
    else:
        from ray.tune.search.hyperopt import HyperOptSearch

        rng = random.Random(rng_seed)
        searcher = HyperOptSearch(
            metric=tune_cfg.metric,
            mode=tune_cfg.mode,
            random_state_seed=rng_seed,
            points_to_evaluate=[completed_seed(s, tune_cfg.space, rng) for s in start.seeds]
            or None,
        )
    return ConcurrencyLimiter(searcher, max_concurrent=tune_cfg.max_concurrent)


def study_with_prior(config: GraftConfig, prior: Sequence[PriorResult]) -> Any:
    """An in-memory Optuna storage whose study already holds ``prior`` as finished trials,
    for OptunaSearch to load: TPE models them before its first suggestion."""
    import optuna

    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(
        storage=storage,
        study_name=OPTUNA_STUDY,
        direction="maximize" if config.tune.mode == "max" else "minimize",
    )
    for result in prior:
        study.add_trial(
            optuna.trial.create_trial(
                params=result.params,
                distributions=optuna_distributions(config.tune.space, result.params),
                value=result.score,
            )
        )
    return storage


def tpe_sampler(config: GraftConfig, rng_seed: int | None = None) -> Any:
    """TPE as ``tune.tpe`` sets it, seeded with ``rng_seed`` (None: ``tune.seed``)."""
    import warnings

    import optuna

    tpe = config.tune.tpe
    with warnings.catch_warnings():
        # multivariate, group and constant_liar are flagged experimental by Optuna; they are
        # chosen in config, so the warning would only repeat what the user asked for
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(
            seed=config.tune.seed if rng_seed is None else rng_seed,
            n_startup_trials=tpe.startup_trials,
            multivariate=tpe.multivariate,
            # conditional keys make the space dynamic: multivariate TPE models each group of
            # keys that occur together instead of falling back to independent sampling
            group=tpe.multivariate,
            constant_liar=tpe.constant_liar,
        )


def make_scheduler(config: GraftConfig, max_epochs: int) -> Any:
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, MedianStoppingRule

    tune_cfg = config.tune
    grace = min(tune_cfg.grace_period, max_epochs)
    if tune_cfg.scheduler == "fifo":
        return FIFOScheduler()
    if tune_cfg.scheduler == "median":
        return MedianStoppingRule(
            time_attr=TIME_ATTR,
            grace_period=grace,
            min_samples_required=tune_cfg.median_min_samples,
        )
    if tune_cfg.scheduler == "pbt":
        return make_pbt_scheduler(config)
    # hyperband: asynchronous Hyperband, i.e. ASHA over several brackets (Li et al., 2020).
    # Synchronous HyperBand pauses and resumes trials, which a Train V2 trial cannot do cheaply.
    return ASHAScheduler(
        time_attr=TIME_ATTR,
        max_t=max_epochs,
        grace_period=grace,
        reduction_factor=tune_cfg.reduction_factor,
        brackets=tune_cfg.hyperband_brackets if tune_cfg.scheduler == "hyperband" else 1,
    )


def search_stopper(config: GraftConfig, max_epochs: int) -> Any:
    """What ends trials or the search besides the scheduler (the time budget is Tune's own)."""
    if config.tune.scheduler == "pbt":
        # a PBT trial's last report ends it before PBT sees it: a finished trial is never
        # exploited into training past the finetune's epochs (the config refuses a budget)
        return {TIME_ATTR: max_epochs}
    if config.tune.epoch_budget is not None:
        from graft.tune.epoch_budget import EpochBudgetStopper

        return EpochBudgetStopper(config.tune.epoch_budget, TIME_ATTR)
    return None
