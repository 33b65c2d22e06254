"""Evaluation protocols: holdout, stratified K-fold, iterated K-fold, and ``auto``.

The protocol decides which rows a model is scored on; the model itself comes from a
``train_and_score`` callable that must build a FRESH, untrained model every time it is called
(never the previous fold's weights), train it on the fold's training rows and return its
score on the fold's validation rows. Every row is validated exactly once per K-fold pass,
the ``n % k`` remainder included (the book's ``len(data) // k`` slicing drops it).

``auto`` runs a split-stability probe first: it scores several seeded holdout splits of the
same rows and measures the spread of the score. A holdout whose score moves with the shuffle
(std above ``probe_max_std``) or whose validation set is smaller than ``min_val_rows`` is
unreliable, and ``auto`` picks K-fold instead (Chollet, "Deep Learning with Python", 5.2.1).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from graft.config import ProtocolConfig
from graft.data.folds import Fold, FoldData
from graft.errors import ConfigError, DatasetError
from graft.evaluate.baselines import linear_baseline

RunProtocol = Literal["holdout", "kfold", "iterated_kfold"]


TrainAndScore = Callable[[FoldData], float]


@dataclass
class FoldScore:
    repeat: int
    fold: int
    train_rows: int
    val_rows: int
    score: float


@dataclass
class StabilityProbe:
    """The spread of a holdout score over seeded re-splits of the same rows."""

    scores: list[float]
    val_rows: int
    mean: float
    std: float

    @property
    def spread(self) -> float:
        return max(self.scores) - min(self.scores)


@dataclass
class ProtocolChoice:
    protocol: RunProtocol
    reason: str
    probe: StabilityProbe | None = None


@dataclass
class ProtocolResult:
    """Per-fold scores and their mean ± std (population std over all folds of all repeats)."""

    requested: str
    protocol: RunProtocol
    reason: str
    folds: list[FoldScore] = field(default_factory=list)
    mean: float = 0.0
    std: float = 0.0
    repeat_means: list[float] = field(default_factory=list)
    probe: StabilityProbe | None = None

    @property
    def fits(self) -> int:
        return len(self.folds)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["fits"] = self.fits
        return data


# ----------------------------------------------------------------------------- folds


def _stratified_order(y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Row indices class by class, each class shuffled; dealing this order round-robin into
    k folds gives every fold each class's count to within 1 and fold sizes within 1."""
    return np.concatenate([rng.permutation(np.flatnonzero(y == c)) for c in np.unique(y)])


def stratified_kfold(y: np.ndarray, k: int, seed: int, repeat: int = 0) -> list[Fold]:
    """K stratified folds of ``len(y)`` rows; each row lands in exactly one validation fold."""
    y = np.asarray(y)
    if k < 2:
        raise ConfigError(f"K-fold needs k >= 2 folds, got {k}")
    if len(y) < k:
        raise DatasetError(f"K-fold with k={k} needs at least {k} rows, got {len(y)}")
    order = _stratified_order(y, np.random.default_rng(seed))
    assignment = np.empty(len(y), dtype=np.int64)
    assignment[order] = np.arange(len(order)) % k
    rows = np.arange(len(y))
    return [
        Fold(repeat, index, rows[assignment != index], rows[assignment == index])
        for index in range(k)
    ]


def iterated_kfold(y: np.ndarray, k: int, repeats: int, seed: int) -> list[Fold]:
    """P = ``repeats`` K-fold passes, each after its own seeded shuffle (P x K folds)."""
    if repeats < 1:
        raise ConfigError(f"iterated K-fold needs repeats >= 1, got {repeats}")
    seeds = np.random.SeedSequence(seed).generate_state(repeats)
    return [
        fold
        for repeat, repeat_seed in enumerate(seeds)
        for fold in stratified_kfold(y, k, int(repeat_seed), repeat)
    ]


def holdout_rows(n: int, val_size: int | float) -> int:
    """Validation rows of a holdout: an int is a count, a float a fraction of ``n``."""
    rows = round(val_size * n) if isinstance(val_size, float) else int(val_size)
    if not 1 <= rows < n:
        raise DatasetError(
            f"a holdout of {val_size} on {n} rows leaves {rows} validation rows; it needs at "
            f"least 1 validation and 1 training row"
        )
    return rows


def holdout_split(y: np.ndarray, val_size: int | float, seed: int, repeat: int = 0) -> Fold:
    """One seeded stratified holdout split (the protocol of Listing 5.5, shuffled first)."""
    y = np.asarray(y)
    n_val = holdout_rows(len(y), val_size)
    # dealing the class-by-class order with stride n/n_val spreads each class evenly
    order = _stratified_order(y, np.random.default_rng(seed))
    picks = np.floor(np.arange(n_val) * (len(y) / n_val)).astype(np.int64)
    is_val = np.zeros(len(y), dtype=bool)
    is_val[order[picks]] = True
    rows = np.arange(len(y))
    return Fold(repeat, 0, rows[~is_val], rows[is_val])


# ----------------------------------------------------------------------------- running


def _fold_data(x: np.ndarray, y: np.ndarray, fold: Fold, seed: int) -> FoldData:
    return FoldData(fold, x[fold.train], y[fold.train], x[fold.val], y[fold.val], seed)


def score_folds(
    x: np.ndarray, y: np.ndarray, folds: list[Fold], train_and_score: TrainAndScore, seed: int
) -> list[FoldScore]:
    """Call ``train_and_score`` once per fold (each call builds its own fresh model)."""
    scores = []
    for fold in folds:
        score = float(train_and_score(_fold_data(x, y, fold, seed)))
        scores.append(FoldScore(fold.repeat, fold.index, len(fold.train), len(fold.val), score))
    return scores


def probe_split_stability(
    x: np.ndarray,
    y: np.ndarray,
    probe_score: TrainAndScore,
    val_size: int | float,
    splits: int,
    seed: int,
) -> StabilityProbe:
    """Score ``splits`` seeded holdout splits of the same rows; a large std means the holdout
    estimate depends on the shuffle more than on the model."""
    seeds = np.random.SeedSequence(seed).generate_state(splits)
    folds = [holdout_split(y, val_size, int(s), repeat) for repeat, s in enumerate(seeds)]
    scores = [f.score for f in score_folds(x, y, folds, probe_score, seed)]
    return StabilityProbe(
        scores=scores,
        val_rows=len(folds[0].val),
        mean=float(np.mean(scores)),
        std=float(np.std(scores)),
    )


def choose_protocol(config: ProtocolConfig, probe: StabilityProbe | None) -> ProtocolChoice:
    """The protocol to run and why; ``auto`` reads the probe (which it needs)."""
    if config.name != "auto":
        configured: RunProtocol = config.name
        return ProtocolChoice(configured, f"configured: evaluate.protocol.name={configured}")
    if probe is None:
        raise ValueError("evaluate.protocol.name=auto needs a split-stability probe")
    unreliable = []
    if probe.std > config.probe_max_std:
        unreliable.append(
            f"holdout accuracy std {probe.std:.4f} over {len(probe.scores)} seeded splits > "
            f"probe_max_std {config.probe_max_std}"
        )
    if probe.val_rows < config.min_val_rows:
        unreliable.append(
            f"holdout validation set of {probe.val_rows} rows < min_val_rows {config.min_val_rows}"
        )
    if not unreliable:
        return ProtocolChoice(
            "holdout",
            f"holdout reliable: accuracy std {probe.std:.4f} over {len(probe.scores)} seeded "
            f"splits <= {config.probe_max_std} and {probe.val_rows} validation rows >= "
            f"{config.min_val_rows}",
            probe,
        )
    return ProtocolChoice(config.auto_picks, "holdout unreliable: " + "; ".join(unreliable), probe)


def protocol_folds(
    y: np.ndarray, protocol: RunProtocol, config: ProtocolConfig, val_size: int | float, seed: int
) -> list[Fold]:
    if protocol == "holdout":
        return [holdout_split(y, val_size, seed)]
    if protocol == "kfold":
        return stratified_kfold(y, config.folds, seed)
    return iterated_kfold(y, config.folds, config.repeats, seed)


def run_protocol(
    x: np.ndarray,
    y: np.ndarray,
    config: ProtocolConfig,
    train_and_score: TrainAndScore,
    seed: int,
    *,
    holdout_val_size: int | float,
    probe_score: TrainAndScore | None = None,
) -> ProtocolResult:
    """Run the configured protocol on (x, y): per-fold scores, their mean ± std, and which
    protocol ran and why.

    ``holdout_val_size`` sizes the holdout split (and the probe's splits): an int is a row
    count, a float a fraction. ``probe_score`` is the cheap model ``auto``'s probe trains
    (e.g. :func:`linear_probe`); None probes with ``train_and_score`` itself.
    """
    x, y = np.asarray(x), np.asarray(y)
    if len(x) != len(y):
        raise DatasetError(f"x has {len(x)} rows but y has {len(y)}; they must match")
    probe = None
    if config.name == "auto":
        probe = probe_split_stability(
            x, y, probe_score or train_and_score, holdout_val_size, config.probe_splits, seed
        )
    choice = choose_protocol(config, probe)
    folds = protocol_folds(y, choice.protocol, config, holdout_val_size, seed)
    scores = score_folds(x, y, folds, train_and_score, seed)
    values = np.array([s.score for s in scores])
    repeats = sorted({s.repeat for s in scores})
    return ProtocolResult(
        requested=config.name,
        protocol=choice.protocol,
        reason=choice.reason,
        folds=scores,
        mean=float(values.mean()),
        std=float(values.std()),
        repeat_means=[float(np.mean([s.score for s in scores if s.repeat == r])) for r in repeats],
        probe=probe,
    )


def linear_probe(max_iter: int, max_rows: int) -> TrainAndScore:
    """A cheap probe model: logistic regression on flattened, train-standardized features."""

    def score(data: FoldData) -> float:
        return linear_baseline(
            data.x_train, data.y_train, data.x_val, data.y_val, max_iter, max_rows, data.seed
        )

    return score
