"""A search that starts where the last one ended (``tune.warm_start_top_k``): its first trials
are the k best trials of the search that produced the registered champion, its searcher is told
every trial of that search with its score, and it draws from a random stream of its own
(graft.tune.search_start says why).

The champion (``models:/<export.model_name>@champion``) names the pipeline run that
registered it; that run's tune stage run holds the search, its nested trial runs each trial's
parameters and its metric per epoch. A trial scores its metric's last value (the one Tune
ranked it by), under the metric the past search optimised (its ``best_<metric>``); a PBT
trial's numeric keys are the values it last trained under (``pbt.<key>``). The best trials
are fitted to the current ``tune.space`` (graft.tune.seeds); two that fit to the same seed
count once. Every trial, fitted the same way, is a prior result, unless the past search ranked
by another metric than ``tune.metric`` (its scores would not compare).

Without a champion, or when the champion's run did not search, the search starts cold with
an info line saying why. The tune stage's run records what it used: tags
``graft.tune.warm_start`` (seeded or cold) and ``graft.tune.warm_start_seeds`` (how many),
and ``tune/warm_start.json`` (the source, the seeds, each seed's trial and changes, the prior
results and the random seed). A retried or resumed tune stage reuses what its run recorded,
even if the champion moved since.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from graft.config import GraftConfig
from graft.config.tune import metric_mode
from graft.io import registry, tracking
from graft.tune.pbt import PBT_PARAM_PREFIX
from graft.tune.runs import TRIAL_TAG, TUNE_DISABLED_TAG
from graft.tune.search_start import PriorResult, SearchStart, warm_rng_seed
from graft.tune.seeds import fitted_seed

log = logging.getLogger(__name__)

WARM_START_FILE = "tune/warm_start.json"
WARM_START_TAG = "graft.tune.warm_start"  # seeded or cold
SEEDS_TAG = "graft.tune.warm_start_seeds"  # how many seeds the search started with


@dataclass(frozen=True)
class PastTrial:
    """A trial of a finished search, as its MLflow run holds it."""

    trial_id: str
    run_id: str
    score: float
    params: dict[str, str]  # as logged: strings


@dataclass(frozen=True)
class PastSearch:
    """The champion's search: where it is and how it ranked its trials."""

    champion_version: str
    pipeline_run_id: str
    tune_run_id: str
    metric: str
    trials: list[PastTrial]

    @property
    def mode(self) -> str:
        return metric_mode(self.metric)

    def best(self) -> list[PastTrial]:
        """Its trials, best first (ties in trial order)."""
        sign = -1.0 if self.mode == "max" else 1.0
        return sorted(self.trials, key=lambda t: sign * t.score)


@dataclass
class WarmStart:
    """The seeds a search starts with ([] : a cold start) and why."""

    seeds: list[dict[str, Any]]
    reason: str
    source: dict[str, str] = field(default_factory=dict)
    trials: list[dict[str, Any]] = field(default_factory=list)  # per seed: its trial, changes
    prior: list[PriorResult] = field(default_factory=list)
    rng_seed: int | None = None

    def record(self) -> dict[str, Any]:
        return {
            "seeded": bool(self.seeds),
            "reason": self.reason,
            "source": self.source,
            "seeds": self.seeds,
            "trials": self.trials,
            "prior": [{"params": p.params, "score": p.score} for p in self.prior],
            "rng_seed": self.rng_seed,
        }

    def start(self) -> SearchStart:
        return SearchStart(self.seeds, self.prior, self.rng_seed) if self.seeds else SearchStart()


def search_start(config: GraftConfig, logger: tracking.RunLogger, dataset_hash: str) -> SearchStart:
    """How the search of the tune stage run ``logger`` writes to starts on the data of
    ``dataset_hash``, recorded on that run; a cold start when ``tune.warm_start_top_k`` is 0
    (nothing looked up or recorded)."""
    if not config.tune.warm_start_top_k:
        return SearchStart()
    recorded = tracking.run_dict(config, logger.run_id, WARM_START_FILE)
    if recorded is not None:
        start = recorded_start(recorded)
        log.info(
            "warm start: this tune stage run recorded %d seed(s) already; reused",
            len(start.seeds),
        )
        return start
    warm = warm_start(config, dataset_hash)
    logger.tags(
        {WARM_START_TAG: "seeded" if warm.seeds else "cold", SEEDS_TAG: str(len(warm.seeds))}
    )
    logger.dict(warm.record(), WARM_START_FILE)
    return warm.start()


def recorded_start(record: Mapping[str, Any]) -> SearchStart:
    """The start a tune stage run recorded (``tune/warm_start.json``); a record written before
    prior results were kept has none, and a cold record none of anything."""
    seeds = list(record.get("seeds", []))
    if not seeds:
        return SearchStart()
    prior = [PriorResult(dict(p["params"]), float(p["score"])) for p in record.get("prior", [])]
    return SearchStart(seeds, prior, record.get("rng_seed"))


def warm_start(config: GraftConfig, dataset_hash: str = "") -> WarmStart:
    """The top ``tune.warm_start_top_k`` trials of the champion's search, fitted to
    ``tune.space``, its prior results and the random seed of a search on the data of
    ``dataset_hash``; a cold start (no seeds) with the reason when there is no such search."""
    found = champion_search(config)
    if isinstance(found, str):
        log.info("warm start: the search starts cold: %s", found)
        return WarmStart([], found)
    warm = WarmStart(
        [],
        "",
        source={
            "champion_version": found.champion_version,
            "pipeline_run_id": found.pipeline_run_id,
            "tune_run_id": found.tune_run_id,
            "metric": found.metric,
            "mode": found.mode,
        },
    )
    for trial in found.best():
        if len(warm.seeds) == config.tune.warm_start_top_k:
            break
        _add_seed(warm, trial, config)
    warm.prior = prior_results(found, config)
    warm.rng_seed = warm_rng_seed(config.tune.seed, found.tune_run_id, dataset_hash)
    of_search = (
        f"of the search of champion version {found.champion_version} (pipeline run "
        f"{found.pipeline_run_id})"
    )
    if not warm.seeds:
        warm.reason = f"none of the {len(found.trials)} trials {of_search} fits tune.space"
        log.info("warm start: the search starts cold: %s", warm.reason)
        return warm
    warm.reason = f"the {len(warm.seeds)} best trial(s) by {found.metric} {of_search}"
    log.info("warm start: seeding the search with %s", warm.reason)
    return warm


def _add_seed(warm: WarmStart, trial: PastTrial, config: GraftConfig) -> None:
    seed, changes = fitted_seed(trial.params, config.tune.space, f"trial {trial.trial_id}")
    if not seed or seed in warm.seeds:
        log.info(
            "warm start: trial %s adds no seed (%s)",
            trial.trial_id,
            "none of its keys fit tune.space" if not seed else "it fits to an earlier seed",
        )
        return
    warm.seeds.append(seed)
    warm.trials.append(
        {
            "trial_id": trial.trial_id,
            "run_id": trial.run_id,
            "score": trial.score,
            "logged": trial.params,
            "changes": [change.describe() for change in changes],
        }
    )


def prior_results(found: PastSearch, config: GraftConfig) -> list[PriorResult]:
    """Every trial of ``found`` fitted to ``tune.space`` (quietly: the seeds' changes were
    warned about), in trial order; none when ``found`` ranked by another metric."""
    if found.metric != config.tune.metric:
        log.info(
            "warm start: the champion's search ranked by %s, this one by %s: its scores are "
            "not told to the searcher",
            found.metric,
            config.tune.metric,
        )
        return []
    prior = []
    for trial in found.trials:
        params, _ = fitted_seed(trial.params, config.tune.space, warn=False)
        if params:
            prior.append(PriorResult(params, trial.score))
    return prior


def champion_search(config: GraftConfig) -> PastSearch | str:
    """The search of the pipeline run that registered the champion, or why there is none."""
    champion = registry.champion_pipeline_run(config)
    if champion is None:
        return f"no champion: models:/{config.export.model_name}@champion is not registered"
    version, pipeline_run_id = champion
    if pipeline_run_id is None:
        return f"champion version {version} does not name the pipeline run that registered it"
    stage_run = _tune_stage_run(tracking.child_runs(config, pipeline_run_id))
    if stage_run is None:
        return f"champion version {version}'s pipeline run {pipeline_run_id} has no tune stage"
    if stage_run.tags.get(TUNE_DISABLED_TAG) == "disabled":
        return f"champion version {version}'s pipeline run did not search (tune.enabled=false)"
    metric = _search_metric(stage_run.metrics, config.tune.metric)
    trials = list(_past_trials(tracking.child_runs(config, stage_run.run_id), metric))
    if not trials:
        return (
            f"the search of champion version {version} (tune run {stage_run.run_id}) has no "
            f"trial that reported {metric}"
        )
    return PastSearch(version, pipeline_run_id, stage_run.run_id, metric, trials)


def _tune_stage_run(runs: Iterable[tracking.RunRecord]) -> tracking.RunRecord | None:
    """The pipeline run's tune stage run: the last that finished, else the last."""
    stages = [r for r in runs if r.tags.get("graft.stage") == "tune"]
    finished = [r for r in stages if r.status == "FINISHED"]
    candidates = finished or stages
    return candidates[-1] if candidates else None


def _search_metric(stage_metrics: Mapping[str, float], default: str) -> str:
    """The metric the search optimised: the one its stage run logged ``best_<metric>`` of."""
    for metric in ("val_accuracy", "val_loss"):
        if f"best_{metric}" in stage_metrics:
            return metric
    return default


def _past_trials(runs: Iterable[tracking.RunRecord], metric: str) -> Iterable[PastTrial]:
    for run in runs:
        # a trial that diverged (NaN) has no rank
        if TRIAL_TAG not in run.tags or not math.isfinite(run.metrics.get(metric, math.nan)):
            continue
        params = dict(run.params)
        for key, value in run.metrics.items():
            # a PBT trial's hyperparameters when it last trained: its params are its first
            if key.startswith(PBT_PARAM_PREFIX) and key[len(PBT_PARAM_PREFIX) :] in params:
                params[key[len(PBT_PARAM_PREFIX) :]] = repr(value)
        yield PastTrial(run.tags[TRIAL_TAG], run.run_id, run.metrics[metric], params)
