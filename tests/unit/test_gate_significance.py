"""The gate against noise: a challenger must beat the champion beyond noise
(``evaluate.require_significant``), and the verdict against the linear baseline is said plainly
in the gate's reasons, gate.json and the HTML report."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from graft.config import EvaluateConfig, load_config
from graft.errors import ConfigError
from graft.evaluate.gate import decide
from graft.evaluate.metrics import classification_report
from graft.evaluate.paired import PairedComparison, paired_comparison
from graft.evaluate.summary import summarize, write_summary

ROWS = 2097  # the default demo's test split


def _correctness(only_model: int, only_other: int, both: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-row correctness of the model and another predictor with these 2x2 counts."""
    model, other = np.zeros(ROWS, dtype=bool), np.zeros(ROWS, dtype=bool)
    model[: both + only_model] = True
    other[:both] = True
    other[both + only_model : both + only_model + only_other] = True
    return model, other


def _paired(only_model: int, only_other: int, both: int, alpha: float = 0.05) -> PairedComparison:
    return paired_comparison(*_correctness(only_model, only_other, both), alpha=alpha)


# the default demo's gap (issue 19): 0.9537 vs 0.9528, +2 rows of 2,097
NOISE_MODEL, NOISE_OTHER = _correctness(only_model=62, only_other=60, both=1938)
NOISE = paired_comparison(NOISE_MODEL, NOISE_OTHER)
# clearly better: 0.9537 vs 0.9108, 100 rows won against 10 lost
CLEAR = _paired(only_model=100, only_other=10, both=1900)


def test_a_challenger_within_noise_of_the_champion_is_refused() -> None:
    decision = decide(EvaluateConfig(), NOISE.accuracy_a, 0.5, NOISE)
    assert not decision.passed
    # the margin rule alone would have passed it: the point estimate is ahead
    assert decision.reasons[1].startswith("beats the champion on the same test split")
    refusal = decision.reasons[2]
    assert "gain over the champion is not significant at alpha 0.05" in refusal
    assert "evaluate.require_significant" in refusal
    assert "+0.0010 [-0.0" in refusal and "p=0.93" in refusal
    assert decision.comparisons == {"champion": NOISE}


def test_a_clearly_better_challenger_passes() -> None:
    assert CLEAR.p_value < 1e-15
    decision = decide(EvaluateConfig(), CLEAR.accuracy_a, 0.5, CLEAR)
    assert decision.passed, decision.reasons
    assert decision.reasons[2].startswith("gain over the champion is significant at alpha 0.05")


def test_the_significance_rule_follows_alpha_and_can_be_turned_off() -> None:
    borderline = _paired(only_model=30, only_other=15, both=1900)  # McNemar p = 0.036
    assert decide(EvaluateConfig(), borderline.accuracy_a, 0.5, borderline).passed
    strict = EvaluateConfig(significance_alpha=0.01)
    strict_test = _paired(only_model=30, only_other=15, both=1900, alpha=0.01)
    refused = decide(strict, strict_test.accuracy_a, 0.5, strict_test)
    assert not refused.passed and "not significant at alpha 0.01" in refused.reasons[2]
    with pytest.raises(ValueError, match=r"evaluate\.significance_alpha=0\.05"):
        decide(EvaluateConfig(), strict_test.accuracy_a, 0.5, strict_test)
    off = decide(EvaluateConfig(require_significant=False), NOISE.accuracy_a, 0.5, NOISE)
    assert off.passed
    assert "(not a gate rule: evaluate.require_significant=false)" in off.reasons[2]


def test_the_linear_baseline_verdict_is_said_and_gates_only_when_asked() -> None:
    decision = decide(EvaluateConfig(), NOISE.accuracy_a, 0.5, None, linear=NOISE)
    assert decision.passed
    said = decision.reasons[-1]
    assert said.startswith("no better than the linear baseline within noise: +0.0010 [-0.0")
    assert "p=0.93" in said and "not a gate rule" in said
    strict = EvaluateConfig(require_significant_over_linear=True)
    refused = decide(strict, NOISE.accuracy_a, 0.5, None, linear=NOISE)
    assert not refused.passed
    assert "(evaluate.require_significant_over_linear)" in refused.reasons[-1]
    beaten = decide(strict, CLEAR.accuracy_a, 0.5, None, linear=CLEAR)
    assert beaten.passed
    assert beaten.reasons[-1].startswith("better than the linear baseline beyond noise: +0.0429")


def test_gate_json_and_the_report_carry_the_verdict_against_the_linear_baseline(
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(ROWS) < 0.5).astype(np.int64)
    predicted = np.where(NOISE_MODEL, y, 1 - y)
    probabilities = np.eye(2)[predicted] * 0.8 + 0.1
    report = classification_report(y, probabilities, 2)
    config = EvaluateConfig()
    majority = paired_comparison(NOISE_MODEL, y == 1)
    decision = decide(config, report.accuracy, 0.5, None, linear=NOISE, majority=majority)
    written = json.loads(json.dumps(asdict(decision)))  # what the stage writes as gate.json
    assert written["comparisons"]["linear"]["p_value"] == pytest.approx(NOISE.p_value)
    assert set(written["comparisons"]) == {"linear", "majority"}
    summary = summarize(config, y, probabilities, ["a", "b"], report)
    page = write_summary(summary, {"test_accuracy": report.accuracy}, decision, tmp_path)
    html = page.read_text()
    assert "id='paired-tests'" in html
    table = html.split("id='paired-tests'")[1].split("</table>")[0]
    assert table.count("<tr>") == 3  # header, linear, majority (no champion)
    assert "linear baseline" in table and "within noise" in table
    assert "better beyond noise" in table  # the majority row
    verdict = html.split("id='linear-verdict'")[1].split("</p>")[0]
    assert "The model is no better than the linear baseline within noise: +0.0010" in verdict


def test_a_negative_champion_margin_contradicts_require_significant() -> None:
    with pytest.raises(ValueError, match=r"evaluate\.require_significant=false"):
        EvaluateConfig(champion_margin=-0.01)
    assert EvaluateConfig(champion_margin=-0.01, require_significant=False).champion_margin < 0
    with pytest.raises(ConfigError, match="champion_margin"):
        load_config(preset="tiny", overrides=["evaluate.champion_margin=-0.01"])
