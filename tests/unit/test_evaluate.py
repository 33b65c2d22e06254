import numpy as np
import pytest

from graft.config import EvaluateConfig
from graft.evaluate.gate import decide
from graft.evaluate.metrics import classification_report, majority_baseline


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


def test_gate_refuses_below_baseline_and_below_champion() -> None:
    config = EvaluateConfig(baseline_margin=0.05, champion_margin=0.01)
    assert decide(config, 0.90, 0.50, None).passed
    refused = decide(config, 0.54, 0.50, None)
    assert not refused.passed and "does not beat the majority baseline" in refused.reasons[0]
    champion = decide(config, 0.90, 0.50, 0.895)
    assert not champion.passed and "does not beat the champion" in champion.reasons[1]
    assert decide(config, 0.91, 0.50, 0.895).passed
