"""``monitor.retrain_when``: the drift figures, or the lack of a champion, as a decision."""

from __future__ import annotations

from dataclasses import dataclass, field

from graft.config.monitor import MonitorConfig
from graft.monitor.figures import DriftFigures

SHOWN_TRIGGERS = 5  # in the reason; the report lists them all


@dataclass(frozen=True)
class Decision:
    retrain: bool
    reason: str
    # the figures above their thresholds, one sentence each (whatever the policy)
    triggers: list[str] = field(default_factory=list)


def no_champion() -> Decision:
    return Decision(True, "retrain: no champion yet, so there is nothing to compare with")


def no_reference(version: str) -> Decision:
    return Decision(
        True,
        f"retrain: the champion (version {version}) was registered without reference "
        "statistics (by a Graft from before the monitor, or before streaming data-prep wrote "
        "them), so drift cannot be "
        "judged; a retrain registers them",
    )


def drift_triggers(config: MonitorConfig, figures: DriftFigures) -> list[str]:
    """One sentence per figure above its threshold: features (largest PSI first), labels,
    the domain classifier."""
    found = [
        f"feature '{c.name}' PSI {c.psi:.3f} > {config.psi_threshold:g}"
        for c in figures.most_drifted(len(figures.columns))
        if c.psi > config.psi_threshold
    ]
    if figures.labels.psi > config.label_psi_threshold:
        found.append(f"label PSI {figures.labels.psi:.3f} > {config.label_psi_threshold:g}")
    domain = figures.domain
    if domain is not None and domain.auc > config.auc_threshold:
        found.append(f"domain classifier AUC {domain.auc:.3f} > {config.auc_threshold:g}")
    return found


def decide(config: MonitorConfig, figures: DriftFigures) -> Decision:
    """The decision under ``config.retrain_when`` for a champion with reference statistics."""
    triggers = drift_triggers(config, figures)
    if config.retrain_when == "always":
        return Decision(True, "retrain: monitor.retrain_when=always", triggers)
    if config.retrain_when == "new_rows":
        enough = figures.new_rows >= config.new_rows
        verb = "retrain" if enough else "keep the champion"
        relation = ">=" if enough else "<"
        return Decision(
            enough,
            f"{verb}: {figures.new_rows} new rows {relation} monitor.new_rows={config.new_rows}",
            triggers,
        )
    return _drift_decision(config, figures, triggers)


def _drift_decision(config: MonitorConfig, figures: DriftFigures, triggers: list[str]) -> Decision:
    if figures.rows_compared < config.min_rows:
        which = "new rows" if figures.compared == "new_rows" else "rows"
        return Decision(
            False,
            f"keep the champion: the snapshot has {figures.rows_compared} {which}, fewer than "
            f"monitor.min_rows={config.min_rows}, too few to tell drift from sampling noise",
            triggers,
        )
    if triggers:
        more = (
            f"; and {len(triggers) - SHOWN_TRIGGERS} more" if len(triggers) > SHOWN_TRIGGERS else ""
        )
        return Decision(
            True, "retrain: drift: " + "; ".join(triggers[:SHOWN_TRIGGERS]) + more, triggers
        )
    domain = "n/a" if figures.domain is None else f"{figures.domain.auc:.3f}"
    return Decision(
        False,
        f"keep the champion: no drift (largest feature PSI {figures.max_psi:.3f} <= "
        f"{config.psi_threshold:g}, label PSI {figures.labels.psi:.3f} <= "
        f"{config.label_psi_threshold:g}, domain AUC {domain} <= {config.auc_threshold:g})",
        triggers,
    )
