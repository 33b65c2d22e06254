"""monitor.retrain_when turns the figures into a decision: always (the default, today's
behaviour), drift (a figure above its threshold, with enough rows), new_rows; without a
champion, or a champion without statistics, the answer is retrain. Bad settings are refused."""

from __future__ import annotations

import pytest

from graft.config import GraftConfig, load_config
from graft.config.monitor import MonitorConfig
from graft.errors import ConfigError
from graft.monitor.domain_classifier import DomainCheck
from graft.monitor.drift import ColumnDrift, LabelShift
from graft.monitor.figures import DriftFigures
from graft.monitor.policy import decide, no_champion, no_reference


def _figures(
    feature_psi: float = 0.01,
    label_psi: float = 0.01,
    auc: float = 0.5,
    rows: int = 5000,
    new_rows: int = 0,
) -> DriftFigures:
    columns = [
        ColumnDrift(name, value, 0.0, 1.0, [0.0], [0.5, 0.5, 0.0], [0.5, 0.5, 0.0])
        for name, value in (("quiet", 0.001), ("moved", feature_psi))
    ]
    labels = LabelShift(["a", "b"], [0.5, 0.5], [0.5, 0.5], label_psi, 0.0, [])
    domain = DomainCheck(auc, 2000, 2000, [0.0, 1.0], [0.0, 1.0])
    return DriftFigures(rows, new_rows, columns, labels, domain)


def test_the_default_policy_always_retrains_as_the_pipeline_did() -> None:
    assert GraftConfig().monitor.retrain_when == "always"
    decision = decide(MonitorConfig(), _figures(feature_psi=0.9))
    assert decision.retrain
    assert "retrain_when=always" in decision.reason
    assert decision.triggers == ["feature 'moved' PSI 0.900 > 0.2"]  # still reported


DRIFT = MonitorConfig(retrain_when="drift")


@pytest.mark.parametrize(
    ("figures", "named"),
    [
        (_figures(feature_psi=0.25), "feature 'moved' PSI 0.250 > 0.2"),
        (_figures(label_psi=0.3), "label PSI 0.300 > 0.2"),
        (_figures(auc=0.65), "domain classifier AUC 0.650 > 0.6"),
    ],
)
def test_drift_retrains_when_any_figure_passes_its_threshold(
    figures: DriftFigures, named: str
) -> None:
    decision = decide(DRIFT, figures)
    assert decision.retrain
    assert decision.triggers == [named]
    assert named in decision.reason


def test_drift_keeps_the_champion_below_every_threshold() -> None:
    decision = decide(DRIFT, _figures(feature_psi=0.19, label_psi=0.19, auc=0.59))
    assert not decision.retrain
    assert decision.reason.startswith("keep the champion: no drift")
    assert decision.triggers == []


def test_drift_is_not_judged_on_too_few_rows() -> None:
    decision = decide(DRIFT, _figures(feature_psi=0.5, rows=DRIFT.min_rows - 1))
    assert not decision.retrain
    assert "monitor.min_rows=500" in decision.reason
    assert decision.triggers  # the report still shows them


def test_new_rows_counts_against_its_threshold() -> None:
    policy = MonitorConfig(retrain_when="new_rows", new_rows=1000)
    assert not decide(policy, _figures(new_rows=999, feature_psi=0.9)).retrain
    decision = decide(policy, _figures(new_rows=1000))
    assert decision.retrain
    assert decision.reason == "retrain: 1000 new rows >= monitor.new_rows=1000"


def test_without_a_champion_or_its_statistics_the_answer_is_retrain() -> None:
    assert no_champion().retrain
    assert "no champion yet" in no_champion().reason
    assert no_reference("7").retrain
    assert "version 7" in no_reference("7").reason


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("monitor.auc_threshold=0.5", "would retrain on noise"),
        ("monitor.auc_threshold=1.2", "not between 0.5 and 1"),
        ("monitor.psi_threshold=0", "monitor.psi_threshold"),
        ("monitor.retrain_when=weekly", "'always', 'drift' or 'new_rows'"),
        ("monitor.new_rows=0", "monitor.new_rows"),
        ("monitor.min_rows=5", "monitor.min_rows"),
    ],
)
def test_bad_settings_are_refused_with_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        load_config(preset="tiny", overrides=[override])
    assert override.split("=")[0] in str(caught.value)
