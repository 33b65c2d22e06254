"""How a search starts: cold, or warm from the champion's search (graft.tune.warm_start).

A warm search takes three things from the search it continues:

- **seeds**: its best trials' configurations, run again first (the data changed, so their
  scores must be measured again);
- **prior results**: every one of its trials, configuration and score, told to a searcher that
  learns from results (Optuna's TPE) before it suggests anything. TPE's first
  ``tune.tpe.startup_trials`` suggestions are otherwise random draws, and with the same
  ``tune.seed`` they are the very draws the last search made: it would run again what the last
  search already measured, seeds included. The scores are last week's, on last week's rows:
  what a warm start assumes anyway (the space's good region moves slowly);
- **its own random stream**: ``rng_seed`` derives from ``tune.seed``, the champion's search
  and the data, so a random or HyperOpt search does not repeat the last search's draws
  either, nor does the next warm search from the same champion (the gate kept it) repeat
  this one's, while the same data and champion give the same search again.

A cold search has none of these, and uses ``tune.seed`` as it is.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class PriorResult:
    """One trial of the champion's search: its configuration fitted to the current
    ``tune.space`` (graft.tune.seeds) and the score it reported under ``tune.metric``."""

    params: dict[str, Any]
    score: float


@dataclass(frozen=True)
class SearchStart:
    """What a search starts with; the defaults are a cold start."""

    seeds: list[dict[str, Any]] = field(default_factory=list)
    prior: list[PriorResult] = field(default_factory=list)
    rng_seed: int | None = None  # None: tune.seed

    def searcher_seed(self, tune_seed: int) -> int:
        return tune_seed if self.rng_seed is None else self.rng_seed


def warm_rng_seed(tune_seed: int, past_tune_run_id: str, dataset_hash: str) -> int:
    """The random seed of a search warm-started from the search of ``past_tune_run_id`` on
    the data of ``dataset_hash`` (data-prep's content hash)."""
    digest = hashlib.sha256(f"{tune_seed}:{past_tune_run_id}:{dataset_hash}".encode()).digest()
    return int.from_bytes(digest[:4], "big")
