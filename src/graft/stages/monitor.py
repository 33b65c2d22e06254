"""The monitor stage: does the new snapshot call for retraining? (docs/monitoring.md)

It reads the snapshot ``data.source`` names as data-prep would, compares it with the reference
statistics registered with ``models:/<export.model_name>@champion`` (the champion's train
rows), decides under ``monitor.retrain_when``, writes the drift report and logs it all to an
MLflow ``monitor`` run. A KFP component can wrap :func:`run` as it is: config and paths in,
:class:`MonitorOutput` out.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

from graft.config import GraftConfig
from graft.io import tracking
from graft.monitor.champion_reference import ChampionReference, champion_reference
from graft.monitor.figures import DriftFigures, measure_drift
from graft.monitor.policy import Decision, decide, no_champion, no_reference
from graft.monitor.report import write_drift_report
from graft.monitor.snapshot import Snapshot, check_comparable, read_snapshot
from graft.stages.outputs import MonitorOutput

log = logging.getLogger(__name__)

FIGURES_FILE = "drift.json"
RETRAINED_TAG = "graft.retrained"  # on the parent run: false when the monitor ended it


def run(
    config: GraftConfig, output_dir: str, parent_run_id: str = "", kfp_run_id: str = "local"
) -> MonitorOutput:
    """Compare ``config.data.source`` with the champion's reference statistics and decide.

    With no ``parent_run_id`` the stage opens the pipeline's parent run (as data-prep does,
    for a monitor that runs first) and hands it on in the output. If it decides not to
    retrain, no stage runs after it to finish the parent run, so it ends it FINISHED itself
    (tagged ``graft.retrained=false``)."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    snapshot = read_snapshot(config.data)
    champion = champion_reference(config)
    figures = _figures(config, snapshot, champion)
    decision = _decision(config, champion, figures)
    reference = None if champion is None else champion.reference
    version = None if champion is None else champion.version
    report = write_drift_report(
        out, decision, config.monitor, config.data.source, version, reference, figures
    )
    summary = {} if figures is None else figures.summary()
    drifted = [
        c.name for c in (figures.columns if figures else []) if c.psi > config.monitor.psi_threshold
    ]
    parent = parent_run_id or tracking.start_pipeline_run(config, kfp_run_id)
    output = MonitorOutput(
        retrain=decision.retrain,
        reason=decision.reason,
        figures=summary,
        triggers=decision.triggers,
        report_path=str(report),
        output_dir=str(out),
        run_id="",
        parent_run_id=parent,
        champion_version=version,
        drifted_features=drifted,
    )
    with tracking.stage_run(config, parent, "monitor") as run_id:
        output.run_id = run_id
        (out / FIGURES_FILE).write_text(_figures_json(output, figures))
        _log(config, run_id, output, out)
    if not decision.retrain:
        tracking.logger_for(config, parent).tags({RETRAINED_TAG: "false"})
        tracking.finish_pipeline_run(config, parent)
    log.info("monitor: %s", decision.reason)
    return output


def _figures(
    config: GraftConfig, snapshot: Snapshot, champion: ChampionReference | None
) -> DriftFigures | None:
    if champion is None or champion.reference is None:
        return None
    check_comparable(champion.reference, snapshot, config.data.source, champion.version)
    return measure_drift(champion.reference, snapshot, config.monitor, config.seed)


def _decision(
    config: GraftConfig, champion: ChampionReference | None, figures: DriftFigures | None
) -> Decision:
    if champion is None:
        return no_champion()
    if figures is None:
        return no_reference(champion.version)
    return decide(config.monitor, figures)


def _figures_json(output: MonitorOutput, figures: DriftFigures | None) -> str:
    """The output and every figure (per feature, per class, the ROC curve) as JSON."""
    return json.dumps(
        {"decision": asdict(output), "figures": None if figures is None else asdict(figures)},
        indent=1,
    )


def _log(config: GraftConfig, run_id: str, output: MonitorOutput, out: Path) -> None:
    logger = tracking.logger_for(config, run_id)
    logger.metrics({**output.figures, "retrain": float(output.retrain)}, step=0)
    logger.params(
        {
            "retrain_when": config.monitor.retrain_when,
            "psi_threshold": config.monitor.psi_threshold,
            "label_psi_threshold": config.monitor.label_psi_threshold,
            "auc_threshold": config.monitor.auc_threshold,
            "new_rows_threshold": config.monitor.new_rows,
            "champion_version": output.champion_version or "none",
        }
    )
    logger.tags(
        {"graft.monitor.retrain": str(output.retrain), "graft.monitor.reason": output.reason[:5000]}
    )
    logger.artifact(out, "monitor")
