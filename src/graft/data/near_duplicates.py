"""Near duplicates across splits: cosine-type similarity of train-standardized features.

Exact copies are removed by hash before splitting; this finds the copies that differ by a
pixel of noise or a rounding, which a hash misses. Features are standardized with train
statistics (so a constant border pixel cannot dominate), and every val/test row is compared
with every train row (and test with val) in blocks; see :func:`best_matches` for the measure.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from graft.errors import DatasetError

# (later split, earlier split): a row of the first is checked against all rows of the second
PAIRS = (("val", "train"), ("test", "train"), ("test", "val"))
BLOCK_ROWS = 512
# with fewer columns, true neighbours are routinely this similar by chance: the check would
# flag ordinary rows, so it is skipped (and the report says so)
MIN_FEATURES = 8


@dataclass
class NearDuplicate:
    split: str
    row_id: int
    partner_split: str
    partner_row_id: int
    similarity: float


@dataclass
class NearDuplicateReport:
    threshold: float
    policy: str
    checked: bool = True
    found: int = 0
    by_pair: dict[str, int] = field(default_factory=dict)
    examples: list[NearDuplicate] = field(default_factory=list)
    # rows compared when only a sample was (data.loader: streaming); None: every row was
    sampled_rows: int | None = None


def _standardized(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    return np.nan_to_num((x - mean) / std, nan=0.0).astype(np.float32)


def norm_band(threshold: float) -> tuple[float, float]:
    """The range of ``|b| / |a|`` within which two rows can reach similarity ``threshold``.

    ``2 a.b / (|a|^2 + |b|^2) <= 2 r / (1 + r^2)`` for ``r = |b| / |a|`` (Cauchy-Schwarz), and
    that bound is at least ``t`` only for ``r`` between the roots of ``r^2 - 2r/t + 1``. Rows
    outside the band cannot match, so they need no comparison: an exact pruning, not an
    approximation. A threshold of 0 or less prunes nothing."""
    if threshold <= 0.0:
        return 0.0, float("inf")
    inverse = 1.0 / min(threshold, 1.0)
    spread = float(np.sqrt(max(inverse * inverse - 1.0, 0.0)))
    return inverse - spread, inverse + spread


def best_matches(
    x: np.ndarray,
    rows: np.ndarray,
    partners: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    threshold: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """For each row in ``rows``: the most similar row of ``partners`` and that similarity,
    for the rows whose best similarity reaches ``threshold`` (the others get similarity
    -inf: only partners that could reach it are compared, see :func:`norm_band`).

    The similarity is ``2 a.b / (|a|^2 + |b|^2)`` on standardized features: the cosine when
    both rows have the same length, lower when they differ, so rows must agree in direction
    *and* magnitude (plain cosine calls ``[1, 1]`` and ``[5, 5]`` duplicates, and finds many
    chance matches in low-dimensional tables). Two all-zero rows have similarity 1.
    """
    best_index = np.zeros(len(rows), dtype=np.int64)
    best_value = np.full(len(rows), -np.inf, dtype=np.float32)
    if len(rows) == 0 or len(partners) == 0:
        return best_index, best_value
    other = _standardized(x[partners], mean, std)
    other_sq = (other * other).sum(axis=1)
    # partners by length, and rows in blocks of similar length: each block compares only
    # the partners in its band
    by_length = np.argsort(other_sq, kind="stable")
    other, other_sq = other[by_length], other_sq[by_length]
    low, high = norm_band(threshold)
    standardized = _standardized(x[rows], mean, std)
    row_sq = (standardized * standardized).sum(axis=1)
    row_order = np.argsort(row_sq, kind="stable")
    for start in range(0, len(rows), BLOCK_ROWS):
        picked = row_order[start : start + BLOCK_ROWS]
        block, block_sq = standardized[picked], row_sq[picked]
        first = np.searchsorted(other_sq, block_sq.min() * low * low, side="left")
        last = np.searchsorted(other_sq, block_sq.max() * high * high, side="right")
        if first >= last:
            continue
        candidates, candidates_sq = other[first:last], other_sq[first:last]
        similarity = block @ candidates.T
        similarity *= 2.0
        denominator = block_sq[:, None] + candidates_sq[None, :]
        similarity /= np.maximum(denominator, 1e-12)
        zero_rows, zero_partners = block_sq == 0, candidates_sq == 0
        if zero_rows.any() and zero_partners.any():
            similarity[np.ix_(zero_rows, zero_partners)] = 1.0
        index = similarity.argmax(axis=1)
        best_index[picked] = by_length[first + index]
        best_value[picked] = similarity[np.arange(len(picked)), index]
    return partners[best_index], best_value


def resolve_near_duplicates(
    x: np.ndarray,
    splits: dict[str, np.ndarray],
    row_ids: np.ndarray,
    threshold: float,
    policy: str,
    max_examples: int = 20,
) -> tuple[dict[str, np.ndarray], np.ndarray, NearDuplicateReport]:
    """Find val/test rows that nearly duplicate an earlier split's row and apply ``policy``.

    ``drop`` removes the later copy, ``keep_together`` moves it into its partner's split,
    ``error`` refuses the data. Returns the new split positions, the dropped positions and the
    report. Nothing changes when none is found.
    """
    flat = x.reshape(len(x), -1).astype(np.float32)
    if flat.shape[1] < MIN_FEATURES:
        skipped = NearDuplicateReport(threshold=threshold, policy=policy, checked=False)
        return splits, np.array([], dtype=np.int64), skipped
    train = flat[splits["train"]]
    mean = np.nanmean(train, axis=0)
    std = np.nanstd(train, axis=0)
    std = np.where(std < 1e-8, 1.0, std)
    report = NearDuplicateReport(threshold=threshold, policy=policy)
    moves: dict[int, str] = {}  # position -> split it must join (or "" to drop)
    for later, earlier in PAIRS:
        rows = np.array([r for r in splits[later] if int(r) not in moves], dtype=np.int64)
        partners, similarity = best_matches(flat, rows, splits[earlier], mean, std, threshold)
        hit = similarity >= threshold
        report.by_pair[f"{later}~{earlier}"] = int(hit.sum())
        for row, partner, value in zip(rows[hit], partners[hit], similarity[hit], strict=True):
            moves[int(row)] = "" if policy == "drop" else earlier
            if len(report.examples) < max_examples:
                report.examples.append(
                    NearDuplicate(
                        later, int(row_ids[row]), earlier, int(row_ids[partner]), float(value)
                    )
                )
    report.found = len(moves)
    if moves and policy == "error":
        shown = ", ".join(
            f"{e.split} row {e.row_id} ~ {e.partner_split} row {e.partner_row_id} "
            f"({e.similarity:.3f})"
            for e in report.examples[:3]
        )
        raise DatasetError(
            f"{len(moves)} near duplicates across splits (similarity >= {threshold}): {shown}; "
            "deduplicate the data, or set data.near_duplicate_policy to drop or keep_together"
        )
    moved = np.array(sorted(moves), dtype=np.int64)
    new_splits = {name: np.setdiff1d(rows, moved) for name, rows in splits.items()}
    for position, target in moves.items():
        if target:
            new_splits[target] = np.append(new_splits[target], position)
    new_splits = {name: np.sort(rows) for name, rows in new_splits.items()}
    dropped = np.array(sorted(p for p, t in moves.items() if not t), dtype=np.int64)
    return new_splits, dropped, report
