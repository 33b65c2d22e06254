"""The export stage: the served files, the model card and the registered model version."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from graft.config import GraftConfig
from graft.data.manifest import DataManifest
from graft.data.prepare import load_split
from graft.data.reference import REFERENCE_FOLDER
from graft.export.bundle import ExportBundle, build_export_bundle
from graft.export.model_card import build_model_card, write_model_card
from graft.export.promotion import promote_champion
from graft.export.raw_inputs import raw_rows
from graft.export.served_model import SERVED_ONNX_FILE, add_prediction_head, check_head
from graft.io import registry, tracking
from graft.nn.models import GraftNet
from graft.stages.outputs import ExportOutput
from graft.train.champion import WEIGHTS_FOLDER, write_champion_files
from graft.train.model_dir import load_checkpoint_model

log = logging.getLogger(__name__)


def run(
    config: GraftConfig,
    dataset_dir: str,
    model_dir: str,
    evaluation_dir: str,
    output_dir: str,
    parent_run_id: str,
) -> ExportOutput:
    """TorchScript + ONNX (BN folded, parity-checked), int8/fp16 variants with their accuracy
    delta and latency, model card, registry version with signature, aliases and tags.

    Export never sees the sealed test split: the example input, the parity checks and the
    int8/fp16 accuracy deltas use the target *validation* split (hence the ``val_`` metric
    names). The served files and the registered model take raw rows: with a tabular NaN fill
    the trained network is wrapped so it fills NaNs exactly as data-prep did
    (:mod:`graft.export.raw_inputs`).

    A retry within the same pipeline run completes the version an earlier attempt registered.
    ``champion`` moves only from the version evaluate compared with (gate.json's
    ``champion_version``): PromotionConflict when it moved (:mod:`graft.export.promotion`)."""
    out = Path(output_dir)
    model, spec = load_checkpoint_model(model_dir)
    manifest = DataManifest.read(dataset_dir)
    bundle, example = _bundle(config, model, dataset_dir, manifest, out)
    gate = json.loads((Path(evaluation_dir) / "gate.json").read_text())
    metrics = json.loads((Path(evaluation_dir) / "metrics.json").read_text())
    (out / "spec.json").write_text(spec.to_json())
    with tracking.stage_run(config, parent_run_id, "export") as run_id:
        logger = tracking.logger_for(config, run_id)
        logger.metrics(_export_metrics(bundle), step=0)
        logger.tags({"graft.dataset_hash": manifest.dataset_hash})
        class_names = manifest.tasks["target"].class_names
        weights = write_champion_files(model, spec, manifest.missing_fill, out / WEIGHTS_FOLDER)
        version = _find_or_register(
            config,
            parent_run_id,
            lambda: _register(
                config, run_id, weights, bundle, class_names, example, out, Path(dataset_dir)
            ),
        )
        tags = _version_tags(config, bundle, gate, metrics, manifest.dataset_hash)
        registry.set_version_tags(config, version, {**tags, "pipeline_run_id": parent_run_id})
        aliases = _set_aliases(config, version, gate, run_id)
        card = build_model_card(
            config,
            bundle,
            metrics,
            gate,
            manifest.dataset_hash,
            class_names,
            version,
            aliases,
            tracking.git_commit(),
        )
        write_model_card(card, out)
        logger.artifact(out, "exported")
    tracking.finish_pipeline_run(config, parent_run_id)
    result = ExportOutput(
        export_dir=str(out),
        run_id=run_id,
        model_name=config.export.model_name,
        model_version=version,
        aliases=aliases,
        torchscript=bundle.files.torchscript,
        onnx=bundle.files.onnx,
        gate_passed=bool(gate["passed"]),
        accuracy=float(metrics["test_accuracy"]),
        baseline_accuracy=float(metrics["baseline_accuracy"]),
    )
    (out / "summary.json").write_text(result.to_json())
    return result


def _bundle(
    config: GraftConfig, model: GraftNet, dataset_dir: str, manifest: DataManifest, out: Path
) -> tuple[ExportBundle, torch.Tensor]:
    """The served files and their checks on the target validation rows, and the example
    input (its first 8 rows)."""
    x_val, y_val = load_split(dataset_dir, "target", "val")
    # what a client sends: NaNs back where data-prep filled them
    x_val = raw_rows(x_val, manifest.missing_fill).astype(np.float32)
    example = torch.from_numpy(x_val[:8])
    bundle = build_export_bundle(
        model, example, x_val, y_val, out, config.export, missing_fill=manifest.missing_fill
    )
    return bundle, example


def _export_metrics(bundle: ExportBundle) -> dict[str, float]:
    files = bundle.files
    export_metrics = {
        "torchscript_max_abs_diff": files.torchscript_max_abs_diff,
        "onnx_max_abs_diff": files.onnx_max_abs_diff,
        "bn_fold_max_abs_diff": bundle.fold_max_abs_diff,
        "batch_norm_folded": float(bundle.batch_norm_folded),
        "val_fp32_accuracy": bundle.fp32_accuracy,
    }
    for variant in bundle.variants:
        export_metrics[f"{variant.name}_val_accuracy"] = variant.accuracy
        export_metrics[f"{variant.name}_val_accuracy_delta"] = variant.accuracy_delta
        export_metrics[f"{variant.name}_size_bytes"] = float(variant.size_bytes)
        for batch, ms in variant.latency_ms.items():
            export_metrics[f"{variant.name}_latency_ms_{batch}"] = ms
    return export_metrics


def _find_or_register(config: GraftConfig, parent_run_id: str, register: Callable[[], str]) -> str:
    """The version an earlier attempt of this pipeline run's export registered (a retry after
    a failure past ``log_model`` completes its tags and aliases rather than register a
    second, untagged one), else the one ``register`` registers."""
    earlier = registry.stage_versions(config, parent_run_id, "export")
    if earlier:
        log.info("export: version %s was registered by an earlier attempt", earlier[0])
        return earlier[0]
    return register()


def _register(
    config: GraftConfig,
    run_id: str,
    weights: Path,
    bundle: ExportBundle,
    class_names: list[str],
    example: torch.Tensor,
    out: Path,
    dataset_dir: Path,
) -> str:
    """A new registry version of the served model (graft.export.served_model: the exported
    ONNX graph taking raw rows, with class names and probabilities out), with its signature
    and input example, the weights Graft loads it from (graft.train.champion) and the
    reference statistics of its train rows the monitor compares snapshots with
    (graft.data.reference)."""
    # before the version exists: a champion always has the files Graft loads it from
    logger = tracking.logger_for(config, run_id)
    logger.artifact(weights, WEIGHTS_FOLDER)
    if (dataset_dir / REFERENCE_FOLDER).is_dir():
        logger.artifact(dataset_dir / REFERENCE_FOLDER, REFERENCE_FOLDER)
    served = add_prediction_head(Path(bundle.files.onnx), class_names, out / SERVED_ONNX_FILE)
    rows = example.numpy()
    outputs = check_head(served, Path(bundle.files.onnx), rows, class_names)
    return registry.register_model(config, run_id, served, rows, outputs)


def _set_aliases(config: GraftConfig, version: str, gate: dict[str, Any], run_id: str) -> list[str]:
    """Every version is the challenger; one that passed the gate is the champion too, if the
    champion is still the version evaluate compared it with (graft.export.promotion: raises
    PromotionConflict when it moved)."""
    aliases = ["challenger"]
    registry.set_alias(config, "challenger", version)
    if gate["passed"]:
        compared_with = gate.get("champion_version")
        compared = None if compared_with is None else str(compared_with)
        promote_champion(config, version, compared, by=f"export run {run_id}")
        aliases.append("champion")
    return aliases


def _version_tags(
    config: GraftConfig,
    bundle: ExportBundle,
    gate: dict[str, Any],
    metrics: dict[str, Any],
    dataset_hash: str,
) -> dict[str, str]:
    version_tags = {
        "gate": str(gate["passed"]),
        "gate_reasons": "; ".join(gate.get("reasons", [])),
        "test_accuracy": str(metrics["test_accuracy"]),
        "dataset_hash": dataset_hash,
        "onnx_opset": str(config.export.onnx_opset),
    }
    for variant in bundle.variants:
        if variant.name in ("int8_dynamic", "onnx_fp16"):
            tag = "quantized" if variant.name == "int8_dynamic" else "fp16"
            version_tags[f"{tag}_val_accuracy_delta"] = f"{variant.accuracy_delta:.6f}"
    return version_tags
