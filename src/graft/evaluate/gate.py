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
) -> GateDecision:
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
    return GateDecision(passed=passed, reasons=reasons)
