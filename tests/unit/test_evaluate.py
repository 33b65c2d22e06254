import numpy as np
import pytest

from graft.config import EvaluateConfig
from graft.evaluate.gate import decide
from graft.evaluate.metrics import classification_report, majority_baseline
from graft.evaluate.paired import PairedComparison, paired_comparison


def test_report_matches_hand_computed_values() -> None:
    y = np.array([0, 0, 0, 1, 1, 2])
    predicted = np.array([0, 0, 1, 1, 0, 2])
    probabilities = np.eye(3)[predicted] * 0.7 + 0.1
    report = classification_report(y, probabilities, 3)
    assert report.accuracy == pytest.approx(4 / 6)
    assert report.confusion == [[2, 1, 0], [1, 1, 0], [0, 0, 1]]
    assert report.precision == pytest.approx([2 / 3, 1 / 2, 1.0])
    assert report.recall == pytest.approx([2 / 3, 1 / 2, 1.0])
    assert report.f1[0] == pytest.approx(2 / 3)
    expected_loss = -(4 * np.log(0.8) + 2 * np.log(0.1)) / 6
    assert report.loss == pytest.approx(expected_loss)


def test_majority_baseline() -> None:
    majority, accuracy = majority_baseline(np.array([1, 1, 0]), np.array([1, 0, 0, 0]))
    assert majority == 1
    assert accuracy == 0.25


def _against_champion(model_right: int, champion_right: int, rows: int = 1000) -> PairedComparison:
    """The model against a champion on ``rows`` test rows, 850 of them right for both."""
    model = np.zeros(rows, dtype=bool)
    champion = np.zeros(rows, dtype=bool)
    model[:model_right] = True
    champion[:850] = True
    champion[model_right : model_right + champion_right - 850] = True
    return paired_comparison(model, champion)


def test_gate_refuses_below_baseline_and_below_champion() -> None:
    # the margin rule alone; the significance rule has its own tests (test_gate_significance)
    config = EvaluateConfig(baseline_margin=0.05, champion_margin=0.01, require_significant=False)
    assert decide(config, 0.90, 0.50, None).passed
    refused = decide(config, 0.54, 0.50, None)
    assert not refused.passed and "does not beat the majority baseline" in refused.reasons[0]
    behind = _against_champion(900, 895)
    assert (behind.accuracy_a, behind.accuracy_b) == (0.900, 0.895)
    champion = decide(config, 0.90, 0.50, behind)
    assert not champion.passed and "does not beat the champion" in champion.reasons[1]
    assert decide(config, 0.91, 0.50, _against_champion(910, 895)).passed
