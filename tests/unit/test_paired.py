"""The paired tests the gate reads: McNemar's exact test against a published table and exact
integer arithmetic, and the paired bootstrap's properties."""

from __future__ import annotations

from fractions import Fraction
from math import comb

import numpy as np
import pytest

from graft.evaluate.paired import comparison_metrics, mcnemar_exact_p, paired_comparison


def _rows(both: int, only_a: int, only_b: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-row correctness of A and B with the given 2x2 counts (rows in that order)."""
    a = np.array([True] * both + [True] * only_a + [False] * only_b + [False] * neither)
    b = np.array([True] * both + [False] * only_a + [True] * only_b + [False] * neither)
    return a, b


def _exact_two_sided(b: int, c: int) -> float:
    """2 * P(X <= min(b, c)), X ~ Binomial(b + c, 1/2), in exact rational arithmetic."""
    n, k = b + c, min(b, c)
    if n == 0:
        return 1.0
    term, total = 1, 1  # comb(n, 0), then comb(n, j) term by term
    for j in range(k):
        term = term * (n - j) // (j + 1)
        total += term
    assert term == comb(n, k)
    return float(min(Fraction(1), Fraction(2 * total, 2**n)))


def test_mcnemar_matches_a_published_table() -> None:
    """Fagerland, Lydersen & Laake, BMC Med Res Methodol 13:91 (2013), Table 1 (Bentur et al.
    2009): airway hyper-responsiveness before/after stem cell transplantation in 21 children,
    discordant pairs 1 and 7. The paper's McNemar exact conditional p-value is 0.070
    (2 * binomcdf(1, 8, 0.5) = 2 * 9/256); its mid-p (0.039) is not what is computed here."""
    assert mcnemar_exact_p(1, 7) == pytest.approx(18 / 256, rel=1e-12)
    assert round(mcnemar_exact_p(7, 1), 3) == 0.070
    test = paired_comparison(*_rows(1, 1, 7, 12))
    assert (test.only_a_correct, test.only_b_correct, test.rows) == (1, 7, 21)
    assert test.p_value == pytest.approx(18 / 256, rel=1e-12)
    assert test.difference == pytest.approx((1 - 7) / 21)
    assert (test.accuracy_a, test.accuracy_b) == pytest.approx((2 / 21, 8 / 21))


@pytest.mark.parametrize(
    ("b", "c"),
    [(0, 0), (0, 1), (0, 12), (2, 0), (3, 3), (4, 5), (10, 30), (121, 59), (62, 60), (480, 560)],
)
def test_mcnemar_matches_exact_binomial_arithmetic(b: int, c: int) -> None:
    assert mcnemar_exact_p(b, c) == pytest.approx(_exact_two_sided(b, c), rel=1e-9, abs=1e-300)


def test_mcnemar_stays_finite_for_large_counts() -> None:
    assert mcnemar_exact_p(50_000, 50_000) == 1.0
    assert 0.0 <= mcnemar_exact_p(40_000, 60_000) < 1e-100
    assert mcnemar_exact_p(5_000, 5_200) == pytest.approx(_exact_two_sided(5_000, 5_200), rel=1e-8)


def test_identical_predictions_differ_by_nothing() -> None:
    a = np.random.default_rng(0).random(500) < 0.8
    test = paired_comparison(a, a.copy())
    assert test.difference == 0.0
    assert (test.ci_low, test.ci_high) == (0.0, 0.0)
    assert test.p_value == 1.0 and test.bootstrap_p_value == 1.0
    assert not test.significant and test.outcome == "within noise"


def test_swapping_the_models_flips_the_sign() -> None:
    a, b = _rows(800, 40, 25, 135)
    forward, backward = paired_comparison(a, b, seed=7), paired_comparison(b, a, seed=7)
    assert forward.difference == pytest.approx(15 / 1000)
    assert backward.difference == -forward.difference
    assert (backward.ci_low, backward.ci_high) == pytest.approx(
        (-forward.ci_high, -forward.ci_low), abs=1e-12
    )
    assert backward.p_value == forward.p_value
    assert backward.bootstrap_p_value == forward.bootstrap_p_value
    assert (backward.only_a_correct, backward.only_b_correct) == (25, 40)


def test_bootstrap_is_seeded_and_its_interval_has_the_normal_width() -> None:
    a, b = _rows(1800, 120, 60, 120)  # 2,100 rows, A ahead by 60 rows
    first, again = paired_comparison(a, b, seed=3), paired_comparison(a, b, seed=3)
    assert (first.ci_low, first.ci_high, first.bootstrap_p_value) == (
        again.ci_low,
        again.ci_high,
        again.bootstrap_p_value,
    )
    n = 2100
    mean = 60 / n
    se = np.sqrt(((120 + 60) / n - mean**2) / n)  # of the mean of per-row -1/0/+1
    assert first.ci_low < mean < first.ci_high
    assert first.ci_high - first.ci_low == pytest.approx(2 * 1.96 * se, rel=0.1)
    # clearly ahead: both tests agree, and the interval excludes 0
    assert first.p_value < 1e-4 and first.bootstrap_p_value < 0.01 and first.ci_low > 0
    assert first.a_better and first.outcome == "better beyond noise"


def test_the_demo_gap_over_the_linear_baseline_is_noise() -> None:
    """The default demo's figures (issue 19): 0.9537 vs 0.9528 on the same 2,097 rows."""
    a, b = _rows(1938, 62, 60, 37)
    test = paired_comparison(a, b)
    assert (test.accuracy_a, test.accuracy_b) == pytest.approx((0.9537, 0.9528), abs=1e-4)
    assert test.ci_low < 0 < test.ci_high
    assert test.p_value > 0.5 and test.bootstrap_p_value > 0.5
    verdict = test.verdict("the linear baseline")
    assert verdict.startswith("no better than the linear baseline within noise: +0.0010 [-0.0")
    assert "p=0.93" in verdict and "2,097 paired test rows" in verdict


def test_the_alpha_sets_the_verdict_and_the_interval() -> None:
    a, b = _rows(900, 30, 15, 55)  # McNemar p = 0.036
    loose, strict = paired_comparison(a, b, alpha=0.05), paired_comparison(a, b, alpha=0.01)
    assert loose.p_value == strict.p_value == pytest.approx(_exact_two_sided(30, 15))
    assert loose.a_better and not strict.a_better
    assert strict.ci_high - strict.ci_low > loose.ci_high - loose.ci_low


def test_metrics_and_errors() -> None:
    a, b = _rows(10, 3, 1, 6)
    test = paired_comparison(a, b, resamples=200)
    assert comparison_metrics({"linear": test}) == {
        "vs_linear_difference": test.difference,
        "vs_linear_ci_low": test.ci_low,
        "vs_linear_ci_high": test.ci_high,
        "vs_linear_p_value": test.p_value,
    }
    with pytest.raises(ValueError, match="different lengths"):
        paired_comparison(a, b[:-1])
    with pytest.raises(ValueError, match="non-empty 1-D"):
        paired_comparison(np.array([], dtype=bool), np.array([], dtype=bool))
