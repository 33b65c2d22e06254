"""What each stage hands on: the typed outputs the KFP adapters and the CLI read."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class OpenRunOutput:
    parent_run_id: str
    data_digest: str  # what data.source holds (graft.data.fingerprint)
    backbone_branch: str  # pretrain, import or champion


@dataclass
class MonitorOutput:
    retrain: bool
    reason: str
    # the headline figures (snapshot_rows, new_rows, max_feature_psi, label_psi,
    # label_total_variation, domain_auc); empty without a champion to compare with
    figures: dict[str, float]
    triggers: list[str]  # the figures above their thresholds, one sentence each
    report_path: str
    output_dir: str
    run_id: str
    parent_run_id: str  # the pipeline's MLflow run: the one given, or the one opened here
    champion_version: str | None = None
    drifted_features: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self))


@dataclass
class DataPrepOutput:
    dataset_dir: str  # train/val only: what the training stages receive
    parent_run_id: str
    dataset_hash: str
    test_split_dir: str  # the sealed test rows: evaluate alone reads them


@dataclass
class TrainOutput:
    model_dir: str
    run_id: str
    val_accuracy: float
    val_loss: float
    epochs_run: int


@dataclass
class ImportOutput:
    model_dir: str  # a model folder, as pretrain writes one
    run_id: str
    source: str  # model.pretrained
    backbone_blocks: int

    def to_json(self) -> str:
        return json.dumps(asdict(self))


@dataclass
class TuneOutput:
    model_dir: str
    run_id: str
    val_accuracy: float
    best_params: dict[str, Any]
    source: str  # "tuned" or "finetune" (the untuned model was better)
    trials: int = 0
    stopped_early: int = 0
    before_first_epoch: int = 0  # stopped before their first epoch (a budget spent)


@dataclass
class EvaluateOutput:
    evaluation_dir: str
    run_id: str
    accuracy: float
    baseline_accuracy: float
    champion_accuracy: float | None
    gate_passed: bool
    reasons: list[str] = field(default_factory=list)


@dataclass
class ExportOutput:
    export_dir: str
    run_id: str
    model_name: str
    model_version: str
    aliases: list[str]
    torchscript: str
    onnx: str
    gate_passed: bool
    accuracy: float
    baseline_accuracy: float

    def to_json(self) -> str:
        return json.dumps(asdict(self))


@dataclass
class FinalizeOutput:
    state: str  # the stages' final state, as KFP reported it
    succeeded: bool
    parent_run_ids: list[str] = field(default_factory=list)  # the pipeline's MLflow runs found
    ended_run_ids: list[str] = field(default_factory=list)  # the runs it ended FAILED
