"""The drift figures find what moved and stay quiet on a fresh sample of the same data:
a mean shift of one table column, a brightness or contrast change of images, a label-prior
shift, and a change in how two columns move together that leaves both histograms alone
(caught by the domain classifier only)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from graft.config.monitor import MonitorConfig
from graft.data.reference import ReferenceStatistics, build_reference
from graft.data.sources import RawDataset, load_digits
from graft.data.validation import row_hashes
from graft.monitor.drift import psi
from graft.monitor.figures import DriftFigures, measure_drift
from graft.monitor.policy import decide, drift_triggers
from graft.monitor.snapshot import Snapshot

DRIFT = MonitorConfig(retrain_when="drift")
COLUMNS = ["f1", "f2", "uniform", "count"]


def _table(
    rows: int, seed: int, shift: float = 0.0, rho: float = 0.0, prior: float = 0.5
) -> RawDataset:
    """Four columns: f1 and f2 standard normal with correlation ``rho`` (f1 moved by
    ``shift``), a uniform and a small count; labels "a"/"b" with P(b) = ``prior``."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(rows, 2))
    f2 = rho * z[:, 0] + np.sqrt(1 - rho**2) * z[:, 1]
    x = np.column_stack([z[:, 0] + shift, f2, rng.uniform(size=rows), rng.poisson(2, rows)])
    y = (rng.uniform(size=rows) < prior).astype(np.int64)
    return RawDataset(
        x=x.astype(np.float32), y=y, class_names=["a", "b"], kind="tabular", feature_names=COLUMNS
    )


def _reference(raw: RawDataset, train: np.ndarray | None = None) -> ReferenceStatistics:
    train = np.arange(len(raw.y)) if train is None else train
    return build_reference(raw, train, row_hashes(raw.x), 0, "hash", "test")


@pytest.fixture(scope="module")
def table_reference() -> ReferenceStatistics:
    return _reference(_table(3000, seed=0))


def _figures(reference: ReferenceStatistics, snapshot: RawDataset) -> DriftFigures:
    return measure_drift(reference, Snapshot.of(snapshot), DRIFT, seed=0)


def test_psi_is_zero_for_equal_shares_and_grows_with_the_shift() -> None:
    shares = np.full(10, 0.1)
    moved = np.array([0.3, 0.2, 0.1, 0.1, 0.1, 0.1, 0.05, 0.05, 0.0, 0.0])
    assert psi(shares, shares) == 0.0
    assert psi(shares, moved) == pytest.approx(psi(moved, shares))
    assert 0.2 < psi(shares, moved) < np.inf


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_fresh_sample_of_the_same_table_is_no_drift(
    table_reference: ReferenceStatistics, seed: int
) -> None:
    """At monitor.min_rows rows, noise alone stays well under every threshold."""
    figures = _figures(table_reference, _table(DRIFT.min_rows, seed=seed))
    decision = decide(DRIFT, figures)
    assert not decision.retrain, decision.reason
    assert figures.max_psi < DRIFT.psi_threshold / 2
    assert figures.labels.psi < DRIFT.label_psi_threshold / 2
    assert figures.domain is not None
    assert abs(figures.domain.auc - 0.5) < 0.07


def test_a_mean_shift_of_one_column_is_found_in_that_column(
    table_reference: ReferenceStatistics,
) -> None:
    figures = _figures(table_reference, _table(1000, seed=4, shift=0.6))
    by_name = {c.name: c for c in figures.columns}
    assert by_name["f1"].psi > DRIFT.psi_threshold
    assert by_name["f1"].ks_p_value < 1e-6
    assert all(by_name[n].psi < 0.1 for n in ("f2", "uniform", "count"))
    assert figures.most_drifted(1)[0].name == "f1"
    decision = decide(DRIFT, figures)
    assert decision.retrain
    assert "feature 'f1' PSI" in decision.reason


def test_a_label_prior_shift_is_found_in_the_labels(table_reference: ReferenceStatistics) -> None:
    figures = _figures(table_reference, _table(1000, seed=5, prior=0.85))
    assert figures.labels.psi > DRIFT.label_psi_threshold
    assert figures.labels.total_variation == pytest.approx(0.35, abs=0.05)
    assert figures.max_psi < 0.1  # the features did not move
    assert "label PSI" in decide(DRIFT, figures).reason


def test_a_class_the_train_rows_never_had_is_named(table_reference: ReferenceStatistics) -> None:
    snapshot = _table(400, seed=6)
    snapshot.class_names = ["a", "c"]
    figures = _figures(table_reference, snapshot)
    assert figures.labels.unseen == ["c"]
    assert figures.labels.psi > DRIFT.label_psi_threshold


def test_the_domain_classifier_catches_a_correlation_the_histograms_miss(
    table_reference: ReferenceStatistics,
) -> None:
    """f1 and f2 become correlated (0.8): each column's distribution is unchanged, so no PSI
    moves, but the rows as a whole are told apart."""
    figures = _figures(table_reference, _table(1000, seed=7, rho=0.8))
    assert figures.max_psi < DRIFT.psi_threshold / 2
    assert figures.labels.psi < DRIFT.label_psi_threshold / 2
    assert figures.domain is not None
    assert figures.domain.auc > DRIFT.auc_threshold
    assert drift_triggers(DRIFT, figures) == [
        f"domain classifier AUC {figures.domain.auc:.3f} > {DRIFT.auc_threshold:g}"
    ]


def test_missing_values_count_as_a_bin_of_their_own(table_reference: ReferenceStatistics) -> None:
    snapshot = _table(1000, seed=8)
    snapshot.x[::3, 2] = np.nan  # a third of 'uniform' goes missing
    by_name = {c.name: c for c in _figures(table_reference, snapshot).columns}
    assert by_name["uniform"].snapshot_shares[-1] == pytest.approx(1 / 3, abs=0.01)
    assert by_name["uniform"].psi > DRIFT.psi_threshold


@pytest.fixture(scope="module")
def digits() -> tuple[RawDataset, ReferenceStatistics, np.ndarray]:
    """scikit-learn's 8x8 digits: the reference from 1,000 rows, the other 797 held out."""
    raw = load_digits()
    order = np.random.default_rng(0).permutation(len(raw.y))
    return raw, _reference(raw, order[:1000]), order[1000:]


def _images(raw: RawDataset, x: np.ndarray, rows: np.ndarray) -> RawDataset:
    return RawDataset(
        x=x.astype(np.float32), y=raw.y[rows], class_names=raw.class_names, kind="image"
    )


def test_images_are_compared_by_their_summaries_not_their_pixels(
    digits: tuple[RawDataset, ReferenceStatistics, np.ndarray],
) -> None:
    _, reference, _ = digits
    assert [h.name for h in reference.histograms] == ["brightness", "contrast", "edge_energy"]
    assert reference.sample.shape == (1000, 3 + 16)  # the summaries and a 4 x 4 grid


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_held_out_images_are_no_drift(
    digits: tuple[RawDataset, ReferenceStatistics, np.ndarray], seed: int
) -> None:
    raw, reference, held_out = digits
    rows = np.random.default_rng(seed).permutation(held_out)[: DRIFT.min_rows]
    decision = decide(DRIFT, _figures(reference, raw.take(rows)))
    assert not decision.retrain, decision.reason


@pytest.mark.parametrize(
    ("change", "moved"),
    [
        (lambda x: np.clip(x + 3.0, 0, 16), "brightness"),  # brighter
        (lambda x: x * 0.5 + 4.0, "contrast"),  # washed out: less contrast
    ],
)
def test_a_brightness_or_contrast_change_of_images_is_drift(
    digits: tuple[RawDataset, ReferenceStatistics, np.ndarray],
    change: Callable[[np.ndarray], np.ndarray],
    moved: str,
) -> None:
    raw, reference, held_out = digits
    figures = _figures(reference, _images(raw, change(raw.x[held_out]), held_out))
    by_name = {c.name: c for c in figures.columns}
    assert by_name[moved].psi > DRIFT.psi_threshold
    assert figures.domain is not None and figures.domain.auc > 0.9
    assert decide(DRIFT, figures).retrain


def test_a_snapshot_holding_the_training_rows_is_not_pulled_below_chance(
    digits: tuple[RawDataset, ReferenceStatistics, np.ndarray],
) -> None:
    """The reference's own sampled rows are left out of the domain classifier: learnt by heart
    under one label they would push its AUC far under 0.5 and hide a drift elsewhere."""
    raw, reference, _ = digits
    figures = _figures(reference, raw)
    assert figures.new_rows == 0  # every row was in the prepared dataset
    assert figures.domain is not None
    assert abs(figures.domain.auc - 0.5) < 0.07


def test_a_shift_in_the_new_rows_is_not_diluted_by_the_old_ones() -> None:
    """A snapshot is last week's rows plus this week's: the figures cover the rows the
    champion's dataset did not hold, so 500 brighter new rows among 1,297 unchanged old ones
    show a brightness PSI above the threshold, while over every row it is diluted below it."""
    raw = load_digits()
    order = np.random.default_rng(0).permutation(len(raw.y))
    old, new = order[:1297], order[1297:]
    reference = _reference(raw.take(old))  # the champion's dataset: the old rows only
    brighter = np.clip(raw.x[new] + 1.0, 0, 16)
    snapshot = _images(raw, np.concatenate([raw.x[old], brighter]), np.concatenate([old, new]))
    rows = Snapshot.of(snapshot)
    on_new = measure_drift(reference, rows, DRIFT, seed=0)
    on_all = measure_drift(
        reference, rows, MonitorConfig(retrain_when="drift", compare="snapshot"), seed=0
    )
    assert (on_new.compared, on_new.rows_compared, on_new.new_rows) == ("new_rows", 500, 500)
    assert (on_all.compared, on_all.rows_compared) == ("snapshot", 1797)
    brightness = {f.compared: f.columns[0].psi for f in (on_new, on_all)}
    assert brightness["new_rows"] > DRIFT.psi_threshold > brightness["snapshot"]
    assert decide(DRIFT, on_new).retrain


def test_with_no_new_row_the_whole_snapshot_is_compared(
    digits: tuple[RawDataset, ReferenceStatistics, np.ndarray],
) -> None:
    raw, reference, _ = digits
    figures = _figures(reference, raw)
    assert (figures.compared, figures.rows_compared, figures.new_rows) == ("snapshot", 1797, 0)
