"""The near-duplicate check compares a row only with partners of a length that could reach
the threshold (graft.data.near_duplicates.norm_band): it must find exactly what comparing
every pair finds (what the pruning saves is a bench figure: docs/benchmarks.md)."""

from __future__ import annotations

import numpy as np
import pytest

from graft.data.near_duplicates import best_matches, norm_band


def _every_pair(
    x: np.ndarray, rows: np.ndarray, partners: np.ndarray, mean: np.ndarray, std: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The measure computed on every pair, no pruning: the reference."""
    a = (x[rows] - mean) / std
    b = (x[partners] - mean) / std
    dots = a @ b.T
    denominator = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :]
    similarity = np.where(denominator > 0, 2 * dots / np.maximum(denominator, 1e-12), 1.0)
    return partners[similarity.argmax(1)], similarity.max(1)


def _rows_with_planted_copies(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    # rows of very different lengths, as images of different brightness are
    x = rng.normal(size=(3000, 40)) * rng.uniform(0.2, 3.0, size=(3000, 1))
    rows, partners = np.arange(0, 600), np.arange(600, 3000)
    copies = rng.choice(partners, size=60, replace=False)
    x[rows[:60]] = x[copies] + rng.normal(scale=0.02, size=(60, 40))  # near copies
    x[rows[60:80]] = x[copies[:20]] * 1.05  # same direction, 5% longer
    x[rows[80:85]] = 0.0  # all-zero rows, and zero partners for them
    x[partners[:3]] = 0.0
    return x, rows, partners


@pytest.mark.parametrize("threshold", [0.5, 0.9, 0.99, 1.0])
def test_pruned_matches_are_exactly_the_every_pair_matches(threshold: float) -> None:
    x, rows, partners = _rows_with_planted_copies(seed=int(threshold * 100))
    mean, std = np.zeros(x.shape[1]), np.ones(x.shape[1])
    found_partner, found_value = best_matches(x, rows, partners, mean, std, threshold)
    want_partner, want_value = _every_pair(x, rows, partners, mean, std)
    hits = want_value >= threshold
    # the planted copies are there to be found (at 1.0 only the all-zero rows match)
    assert hits.sum() >= (60 if threshold < 1.0 else 5)
    np.testing.assert_array_equal(found_value >= threshold, hits)
    np.testing.assert_array_equal(found_partner[hits], want_partner[hits])
    np.testing.assert_allclose(found_value[hits], want_value[hits], rtol=1e-5)


def test_the_band_holds_every_length_ratio_that_can_reach_the_threshold() -> None:
    low, high = norm_band(0.99)
    assert 0.86 < low < 0.87 and 1.15 < high < 1.16
    for ratio in np.linspace(0.5, 2.0, 301):
        best = 2 * ratio / (1 + ratio * ratio)  # two parallel rows of these lengths
        assert (best >= 0.99) == (low <= ratio <= high) or abs(best - 0.99) < 1e-9
    assert norm_band(0.0) == (0.0, float("inf"))
