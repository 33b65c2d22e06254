"""The promotion gate: every rule evaluated in one place, with its reasons recorded.

Comparisons with another model on the same test rows (the champion, the linear and majority
baselines) come as paired tests (:mod:`graft.evaluate.paired`): a gap is a gain only when it
is beyond noise. ``evaluate.require_significant`` asks that of a gain over the champion,
``evaluate.require_significant_over_linear`` of the gain over the linear baseline.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from graft.config import EvaluateConfig
from graft.evaluate.paired import PairedComparison

LINEAR = "the linear baseline"


@dataclass
class GateDecision:
    passed: bool
    reasons: list[str] = field(default_factory=list)
    # the model (A) against "majority", "linear", "champion" on the same test rows
    comparisons: dict[str, PairedComparison] = field(default_factory=dict)


@dataclass
class _Rule:
    passed: bool
    reason: str


def decide(
    config: EvaluateConfig,
    accuracy: float,
    baseline_accuracy: float,
    champion: PairedComparison | None,
    *,
    linear: PairedComparison | None = None,
    majority: PairedComparison | None = None,
    calibration_error: float | None = None,
    control_accuracy: float | None = None,
) -> GateDecision:
    """Every configured rule, each with a reason.

    ``champion``, ``linear`` and ``majority`` are the model (A) against each on the same test
    rows (None: no champion, or not compared); ``control_accuracy`` is the label-shuffle
    control's on the same split (None: no control was run)."""
    compared = {"majority": majority, "linear": linear, "champion": champion}
    for name, test in compared.items():
        if test is not None and test.alpha != config.significance_alpha:
            raise ValueError(
                f"the {name} comparison was tested at alpha {test.alpha}, the config asks "
                f"for evaluate.significance_alpha={config.significance_alpha}"
            )
    rules = [_majority_rule(config, accuracy, baseline_accuracy)]
    rules += _champion_rules(config, accuracy, champion)
    if linear is not None:
        rules.append(_linear_rule(config, linear))
    limit = config.max_calibration_error
    if limit is not None and calibration_error is not None:
        rules.append(_calibration_rule(calibration_error, limit))
    if control_accuracy is not None:
        rules.append(
            _control_rule(accuracy, control_accuracy + config.label_shuffle_control.margin)
        )
    return GateDecision(
        passed=all(rule.passed for rule in rules),
        reasons=[rule.reason for rule in rules],
        comparisons={name: test for name, test in compared.items() if test is not None},
    )


def _majority_rule(config: EvaluateConfig, accuracy: float, baseline: float) -> _Rule:
    needed = baseline + config.baseline_margin
    if accuracy > needed:
        return _Rule(True, f"beats the majority baseline: {accuracy:.4f} > {needed:.4f}")
    return _Rule(False, f"does not beat the majority baseline: {accuracy:.4f} <= {needed:.4f}")


def _champion_rules(
    config: EvaluateConfig, accuracy: float, champion: PairedComparison | None
) -> list[_Rule]:
    """The margin over the champion's accuracy, then (``require_significant``) whether the
    gain is beyond noise; without the requirement the paired verdict is reported only."""
    if champion is None:
        return [_Rule(True, "no current champion: nothing else to beat")]
    needed = champion.accuracy_b + config.champion_margin
    if accuracy >= needed:
        margin = _Rule(
            True, f"beats the champion on the same test split: {accuracy:.4f} >= {needed:.4f}"
        )
    else:
        margin = _Rule(False, f"does not beat the champion: {accuracy:.4f} < {needed:.4f}")
    if not config.require_significant:
        note = "(not a gate rule: evaluate.require_significant=false)"
        return [margin, _Rule(True, f"{champion.verdict('the champion')} {note}")]
    level = f"alpha {champion.alpha:g}"
    if champion.a_better:
        significance = _Rule(
            True, f"gain over the champion is significant at {level}: {champion.interval_text}"
        )
    else:
        significance = _Rule(
            False,
            f"gain over the champion is not significant at {level} "
            f"(evaluate.require_significant): {champion.verdict('the champion')}",
        )
    return [margin, significance]


def _linear_rule(config: EvaluateConfig, linear: PairedComparison) -> _Rule:
    """Said plainly either way; refuses only with ``require_significant_over_linear``."""
    verdict = linear.verdict(LINEAR)
    if linear.a_better:
        return _Rule(True, verdict)
    if config.require_significant_over_linear:
        return _Rule(False, f"{verdict} (evaluate.require_significant_over_linear)")
    return _Rule(
        True, f"{verdict} (not a gate rule unless evaluate.require_significant_over_linear)"
    )


def _calibration_rule(calibration_error: float, limit: float) -> _Rule:
    if calibration_error <= limit:
        return _Rule(
            True, f"calibration error within bounds: ECE {calibration_error:.4f} <= {limit}"
        )
    return _Rule(False, f"calibration error too high: ECE {calibration_error:.4f} > {limit}")


def _control_rule(accuracy: float, needed: float) -> _Rule:
    if accuracy > needed:
        return _Rule(
            True, f"learned signal: beats the label-shuffle control {accuracy:.4f} > {needed:.4f}"
        )
    return _Rule(
        False,
        "no better than training on shuffled labels: "
        f"{accuracy:.4f} <= {needed:.4f} (control + margin)",
    )
