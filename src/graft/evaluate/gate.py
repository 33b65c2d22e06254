"""The promotion gate: every rule evaluated in one place, with its reasons recorded."""

from __future__ import annotations

from dataclasses import dataclass, field

from graft.config import EvaluateConfig


@dataclass
class GateDecision:
    passed: bool
    reasons: list[str] = field(default_factory=list)


def decide(
    config: EvaluateConfig,
    accuracy: float,
    baseline_accuracy: float,
    champion_accuracy: float | None,
    *,
    calibration_error: float | None = None,
    control_accuracy: float | None = None,
) -> GateDecision:
    """Every configured rule, each with a reason; ``control_accuracy`` is the label-shuffle
    control's on the same split (None: no control was run)."""
    reasons: list[str] = []
    passed = True
    needed = baseline_accuracy + config.baseline_margin
    if accuracy > needed:
        reasons.append(f"beats the majority baseline: {accuracy:.4f} > {needed:.4f}")
    else:
        passed = False
        reasons.append(f"does not beat the majority baseline: {accuracy:.4f} <= {needed:.4f}")
    if champion_accuracy is None:
        reasons.append("no current champion: nothing else to beat")
    else:
        needed = champion_accuracy + config.champion_margin
        if accuracy >= needed:
            reasons.append(
                f"beats the champion on the same test split: {accuracy:.4f} >= {needed:.4f}"
            )
        else:
            passed = False
            reasons.append(f"does not beat the champion: {accuracy:.4f} < {needed:.4f}")
    limit = config.max_calibration_error
    if limit is not None and calibration_error is not None:
        if calibration_error <= limit:
            reasons.append(
                f"calibration error within bounds: ECE {calibration_error:.4f} <= {limit}"
            )
        else:
            passed = False
            reasons.append(f"calibration error too high: ECE {calibration_error:.4f} > {limit}")
    if control_accuracy is not None:
        needed = control_accuracy + config.label_shuffle_control.margin
        if accuracy > needed:
            reasons.append(
                f"learned signal: beats the label-shuffle control {accuracy:.4f} > {needed:.4f}"
            )
        else:
            passed = False
            reasons.append(
                "no better than training on shuffled labels: "
                f"{accuracy:.4f} <= {needed:.4f} (control + margin)"
            )
    return GateDecision(passed=passed, reasons=reasons)
