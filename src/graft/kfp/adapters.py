"""Translate KFP artifact paths and parameters into ``graft.stages`` calls (the training
stages through ``graft.remote.dispatch``, which may ship them to a Ray cluster).

Components import only this module, so each component body is one line and all logic stays
testable without KFP. A task imports only its own stage's dependencies (the stages are
imported on first use; the other stages' constants inside their adapter), so that each
task's process starts in about a second rather than four. Output artifact paths are used as
directories. Every adapter resolves the run's config from ``config_json`` and the UI's run
parameters with the same function (:func:`graft.kfp.run_parameters.effective_config`).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from graft import stages
from graft.config import FINALIZE_TASK, GraftConfig, PipelineTaskName
from graft.errors import ConfigError, TrackingError
from graft.io.termination import sigterm_interrupts
from graft.kfp.pod_guard import check_pipeline_pod
from graft.kfp.run_parameters import RunParameters, effective_config
from graft.remote import dispatch

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")


def _stage_config(
    config_json: str, stage: PipelineTaskName, parameters: RunParameters | None
) -> GraftConfig:
    """The task's config (``config_json`` under the run's UI parameters), checked for what
    would lose data in a pipeline pod, before any work.

    A refused config ends the task with one ``error:`` line on stderr and exit status 1, not a
    traceback: the task's log in the KFP UI then shows the cause and the fix first.
    """
    sigterm_interrupts()  # a cancelled run stops what the stage started (graft.io.termination)
    try:
        config = effective_config(config_json, parameters)
        check_pipeline_pod(config, stage)
    except ConfigError as exc:
        raise SystemExit(f"error: {exc}") from None
    return config


def _dir(path: str) -> str:
    Path(path).mkdir(parents=True, exist_ok=True)
    return path


def open_run(
    config_json: str,
    kfp_run_id: str,
    data_digest_path: str,
    backbone_path: str,
    parameters: RunParameters | None = None,
) -> str:
    """The MLflow parent run's id; writes the data's digest to ``data_digest_path`` (the
    cacheable stages' input) and the branch after data-prep to ``backbone_path`` (the DAG's
    ``dsl.If`` reads it: pretrain, import or champion)."""
    config = _stage_config(config_json, "open-run", parameters)
    out = stages.open_run.run(config, kfp_run_id)
    _write_parameter(data_digest_path, out.data_digest)
    _write_parameter(backbone_path, out.backbone_branch)
    return out.parent_run_id


def monitor(
    config_json: str,
    parent_run_id: str,
    report_path: str,
    retrain_path: str,
    parameters: RunParameters | None = None,
) -> str:
    """The monitor's decision and figures as JSON; writes the drift report to ``report_path``
    and ``true`` or ``false`` to ``retrain_path`` (the DAG's ``dsl.If`` around the training
    stages reads it)."""
    config = _stage_config(config_json, "monitor", parameters)
    scratch = Path(report_path).parent / "monitor-work"
    out = stages.monitor.run(config, str(scratch), parent_run_id)
    Path(report_path).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(out.report_path, report_path)
    _write_parameter(retrain_path, "true" if out.retrain else "false")
    return out.to_json()


def data_prep(
    config_json: str,
    data_digest: str,
    dataset_path: str,
    test_split_path: str,
    report_path: str,
    parameters: RunParameters | None = None,
) -> str:
    """The dataset's hash. Cacheable: its inputs are the config and the data's digest, and it
    logs under the parent run open-run tagged with those."""
    config = _stage_config(config_json, "data-prep", parameters)
    out = stages.data_prep.run(
        config,
        _dir(dataset_path),
        parent_run_id=stages.open_run.parent_run_for(config, data_digest, in_pipeline=True),
        test_split_dir=_dir(test_split_path),
    )
    shutil.copyfile(Path(dataset_path) / "report.html", report_path)
    return out.dataset_hash


def pretrain(
    config_json: str,
    data_digest: str,
    dataset_path: str,
    model_path: str,
    metrics: Any,
    parameters: RunParameters | None = None,
) -> float:
    """Cacheable, as data-prep is: no run-unique input."""
    config = _stage_config(config_json, "pretrain", parameters)
    parent_run_id = stages.open_run.parent_run_for(config, data_digest, in_pipeline=True)
    out = dispatch.pretrain(config, dataset_path, _dir(model_path), parent_run_id)
    _log_metrics(metrics, _training_metrics(out))
    return out.val_accuracy


def import_backbone(
    config_json: str,
    dataset_path: str,
    model_path: str,
    parent_run_id: str,
    parameters: RunParameters | None = None,
) -> str:
    config = _stage_config(config_json, "import-backbone", parameters)
    out = stages.import_backbone.run(config, dataset_path, _dir(model_path), parent_run_id)
    return out.to_json()


def finetune(
    config_json: str,
    dataset_path: str,
    pretrained_path: str,
    model_path: str,
    parent_run_id: str,
    metrics: Any,
    parameters: RunParameters | None = None,
) -> float:
    config = _stage_config(config_json, "transfer-finetune", parameters)
    out = dispatch.finetune(config, dataset_path, pretrained_path, _dir(model_path), parent_run_id)
    _log_metrics(metrics, _training_metrics(out))
    return out.val_accuracy


def tune(
    config_json: str,
    dataset_path: str,
    pretrained_path: str,
    finetuned_path: str,
    best_model_path: str,
    parent_run_id: str,
    metrics: Any,
    report_path: str,
    parameters: RunParameters | None = None,
) -> str:
    config = _stage_config(config_json, "tune", parameters)
    scratch = Path(best_model_path).parent / "tune-work"
    out = dispatch.tune(
        config, dataset_path, pretrained_path, finetuned_path, str(scratch), parent_run_id
    )
    shutil.copytree(out.model_dir, best_model_path, dirs_exist_ok=True)
    _log_metrics(
        metrics,
        {
            "val_accuracy": out.val_accuracy,
            "trials": out.trials,
            "trials_stopped_early": out.stopped_early,
            "trials_before_first_epoch": out.before_first_epoch,
            "tuned_model_handed_on": out.source == "tuned",
        },
    )
    from graft.tune.html_report import TUNE_REPORT_FILE

    shutil.copyfile(scratch / TUNE_REPORT_FILE, report_path)
    return json.dumps(out.best_params)


def evaluate(
    config_json: str,
    dataset_path: str,
    test_split_path: str,
    model_path: str,
    evaluation_path: str,
    metrics: Any,
    classification: Any,
    report_path: str,
    parent_run_id: str,
    pretrained_path: str = "",
    parameters: RunParameters | None = None,
) -> bool:
    """Also fills the KFP outputs: every scalar test metric and the gate on ``metrics``, the
    confusion matrix and, for a binary task, the ROC curve on ``classification``, and the
    evaluation page at ``report_path``."""
    from graft.evaluate.summary import REPORT_FILE as EVALUATION_REPORT_FILE
    from graft.evaluate.summary import ROC_FILE

    config = _stage_config(config_json, "evaluate", parameters)
    out = stages.evaluate.run(
        config,
        dataset_path,
        test_split_path,
        model_path,
        _dir(evaluation_path),
        parent_run_id,
        pretrained_path,
    )
    evaluation = Path(evaluation_path)
    report = json.loads((evaluation / "metrics.json").read_text())
    # the numbers MLflow has for the run (test_accuracy, baseline_accuracy, ...), and the gate
    figures = {k: v for k, v in report.items() if k not in ("report", "class_names")}
    _log_metrics(metrics, {**figures, "gate_passed": out.gate_passed})
    classification.log_confusion_matrix(report["class_names"], report["report"]["confusion"])
    roc_file = evaluation / ROC_FILE  # written for binary tasks only
    if roc_file.is_file():
        roc = json.loads(roc_file.read_text())
        classification.log_roc_curve(
            roc["false_positive_rate"], roc["true_positive_rate"], roc["thresholds"]
        )
    shutil.copyfile(evaluation / EVALUATION_REPORT_FILE, report_path)
    return out.gate_passed


def export(
    config_json: str,
    dataset_path: str,
    model_path: str,
    evaluation_path: str,
    exported_path: str,
    parent_run_id: str,
    model_card_path: str,
    parameters: RunParameters | None = None,
) -> str:
    config = _stage_config(config_json, "export", parameters)
    out = stages.export.run(
        config, dataset_path, model_path, evaluation_path, _dir(exported_path), parent_run_id
    )
    from graft.export.model_card import MODEL_CARD_MARKDOWN

    shutil.copyfile(Path(exported_path) / MODEL_CARD_MARKDOWN, model_card_path)
    return out.to_json()


def finalize_run(
    config_json: str,
    kfp_run_id: str,
    state: str,
    error_message: str = "",
    parameters: RunParameters | None = None,
) -> None:
    """The exit task: ``state`` and ``error_message`` are the stages' final status. MLflow out
    of reach ends the task with one ``error:`` line that names the pipeline's failure first."""
    config = _stage_config(config_json, FINALIZE_TASK, parameters)
    try:
        stages.finalize.run(config, kfp_run_id, state, error_message)
    except TrackingError as exc:
        raise SystemExit(f"error: {exc}") from None


def _write_parameter(path: str, value: str) -> None:
    """A component's ``dsl.OutputPath(str)``: KFP reads the file's text as the value."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(value)


def _training_metrics(out: stages.TrainOutput) -> dict[str, object]:
    """The restored-best epoch's validation figures (what the stage hands on)."""
    return {
        "val_accuracy": out.val_accuracy,
        "val_loss": out.val_loss,
        "epochs_run": out.epochs_run,
    }


def _log_metrics(artifact: Any, values: Mapping[str, object]) -> None:
    """Numbers onto a KFP ``Metrics`` output (booleans as 0/1). KFP stores them as JSON, which
    has no NaN or infinity: those are left out (MLflow still has them).

    The same numbers also go to the artifact's file, as JSON. KFP keeps logged metrics in the
    artifact's metadata and writes no file, and its local cache takes an output artifact
    whose file is missing for one that is gone: without the file no task with metrics
    (pretrain) could ever be served from a local run's cache."""
    for name, value in values.items():
        if isinstance(value, bool | int | float) and math.isfinite(float(value)):
            artifact.log_metric(name, float(value))
    path = Path(artifact.path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(artifact.metadata, indent=1))
