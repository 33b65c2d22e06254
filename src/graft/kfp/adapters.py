"""Translate KFP artifact paths and parameters into ``graft.stages`` calls.

Components import only this module, so each component body is one line and all logic stays
testable without KFP. Output artifact paths are used as directories. Every adapter resolves
the run's config from ``config_json`` and the UI's run parameters with the same function
(:func:`graft.kfp.run_parameters.effective_config`).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from graft import stages
from graft.kfp.run_parameters import RunParameters, effective_config

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")


def _dir(path: str) -> str:
    Path(path).mkdir(parents=True, exist_ok=True)
    return path


def data_prep(
    config_json: str,
    kfp_run_id: str,
    dataset_path: str,
    test_split_path: str,
    report_path: str,
    parameters: RunParameters | None = None,
) -> str:
    config = effective_config(config_json, parameters)
    out = stages.data_prep(
        config, _dir(dataset_path), kfp_run_id=kfp_run_id, test_split_dir=_dir(test_split_path)
    )
    shutil.copyfile(Path(dataset_path) / "report.html", report_path)
    return out.parent_run_id


def pretrain(
    config_json: str,
    dataset_path: str,
    model_path: str,
    parent_run_id: str,
    parameters: RunParameters | None = None,
) -> float:
    config = effective_config(config_json, parameters)
    out = stages.pretrain(config, dataset_path, _dir(model_path), parent_run_id)
    return out.val_accuracy


def finetune(
    config_json: str,
    dataset_path: str,
    pretrained_path: str,
    model_path: str,
    parent_run_id: str,
    parameters: RunParameters | None = None,
) -> float:
    config = effective_config(config_json, parameters)
    out = stages.finetune(config, dataset_path, pretrained_path, _dir(model_path), parent_run_id)
    return out.val_accuracy


def tune(
    config_json: str,
    dataset_path: str,
    pretrained_path: str,
    finetuned_path: str,
    best_model_path: str,
    parent_run_id: str,
    parameters: RunParameters | None = None,
) -> str:
    config = effective_config(config_json, parameters)
    scratch = Path(best_model_path).parent / "tune-work"
    out = stages.tune(
        config, dataset_path, pretrained_path, finetuned_path, str(scratch), parent_run_id
    )
    shutil.copytree(out.model_dir, best_model_path, dirs_exist_ok=True)
    return json.dumps(out.best_params)


def evaluate(
    config_json: str,
    dataset_path: str,
    test_split_path: str,
    model_path: str,
    evaluation_path: str,
    metrics: Any,
    classification: Any,
    parent_run_id: str,
    pretrained_path: str = "",
    parameters: RunParameters | None = None,
) -> bool:
    config = effective_config(config_json, parameters)
    out = stages.evaluate(
        config,
        dataset_path,
        test_split_path,
        model_path,
        _dir(evaluation_path),
        parent_run_id,
        pretrained_path,
    )
    for name in ("accuracy", "baseline_accuracy", "champion_accuracy"):
        value = getattr(out, name)
        if value is not None:
            metrics.log_metric(f"test_{name}" if name == "accuracy" else name, float(value))
    metrics.log_metric("gate_passed", float(out.gate_passed))
    report = json.loads((Path(evaluation_path) / "metrics.json").read_text())
    classification.log_confusion_matrix(report["class_names"], report["report"]["confusion"])
    return out.gate_passed


def export(
    config_json: str,
    dataset_path: str,
    model_path: str,
    evaluation_path: str,
    exported_path: str,
    parent_run_id: str,
    parameters: RunParameters | None = None,
) -> str:
    config = effective_config(config_json, parameters)
    out = stages.export(
        config, dataset_path, model_path, evaluation_path, _dir(exported_path), parent_run_id
    )
    return out.to_json()
