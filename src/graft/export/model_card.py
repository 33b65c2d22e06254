"""The model card: what was trained on what, how good it is, what it is for, what it is not.

Written as ``model_card.json`` (for machines) and ``model_card.md`` (for people) next to the
exported files, from the evaluation's metrics/gate and the export bundle's measurements.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from graft.config import GraftConfig
from graft.export.bundle import ExportBundle

MODEL_CARD_MARKDOWN = "model_card.md"
METRIC_LABELS = {
    "test_accuracy": "Test accuracy",
    "test_loss": "Test loss (cross-entropy)",
    "test_macro_f1": "Test macro F1",
    "baseline_accuracy": "Majority-class baseline accuracy",
    "linear_baseline_accuracy": "Linear baseline accuracy",
    "champion_accuracy": "Previous champion accuracy (same split)",
    "train_accuracy_eval": "Train accuracy (eval mode)",
    "test_ece": "Expected calibration error",
    "test_false_negative_rate": "False-negative rate",
    "test_false_positive_rate": "False-positive rate",
    "test_roc_auc": "ROC AUC (binary task)",
}


def config_summary(config: GraftConfig) -> dict[str, Any]:
    """The resolved settings a reader needs to know what was trained (the full config is
    logged on the pipeline run as config/resolved.json)."""
    model = config.model
    finetune = config.finetune
    return {
        "name": config.name,
        "seed": config.seed,
        "training_preset": config.training_preset,
        "data_source": config.data.source,
        "split": config.data.split,
        "target_classes": config.data.transfer.target_classes,
        "model_family": model.family,
        "pretrained": model.pretrained,  # the imported backbone (family hf or graft)
        "hidden_sizes": model.hidden_sizes,
        "conv_channels": model.conv_channels if model.family in ("cnn", "mobile") else [],
        "mobile": model.mobile.model_dump() if model.family == "mobile" else None,
        "precision": {"pretrain": config.pretrain.precision, "finetune": finetune.precision},
        "activation": model.activation.name,
        "batch_norm": model.batch_norm.placement if model.batch_norm.enabled else "off",
        "dropout_rate": model.dropout.rate,
        "pretrain_epochs": config.pretrain.epochs,
        "finetune_phases": [
            f"{p.trainable}{'' if p.trainable != 'top_k' else f'({p.top_k})'} x{p.epochs} "
            f"@ lr {finetune.optimizer.lr * p.lr_scale:g}"
            for p in finetune.phases
        ],
        "optimizer": finetune.optimizer.name,
        "warm_start_from_champion": finetune.warm_start_from_champion,
        "onnx_opset": config.export.onnx_opset,
    }


def build_model_card(
    config: GraftConfig,
    bundle: ExportBundle,
    metrics: dict[str, Any],
    gate: dict[str, Any],
    dataset_hash: str,
    class_names: list[str],
    model_version: str,
    aliases: list[str],
    git_commit: str,
    created: datetime | None = None,
) -> dict[str, Any]:
    scalars = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}
    return {
        "model_name": config.export.model_name,
        "model_version": model_version,
        "aliases": aliases,
        "created": (created or datetime.now(UTC)).isoformat(timespec="seconds"),
        "git_commit": git_commit,
        "dataset_hash": dataset_hash,
        "class_names": class_names,
        "config": config_summary(config),
        "metrics": scalars,
        "complexity": {
            "parameters": bundle.parameters,
            "macs": bundle.macs,
            "flops": 2 * bundle.macs,
        },
        "calibration": {"ece": scalars["test_ece"]} if "test_ece" in scalars else None,
        "gate": {"passed": bool(gate["passed"]), "reasons": list(gate.get("reasons", []))},
        "export": {
            "onnx_opset": bundle.opset,
            "torchscript_max_abs_diff": bundle.files.torchscript_max_abs_diff,
            "onnx_max_abs_diff": bundle.files.onnx_max_abs_diff,
            "parity_atol": config.export.parity_atol,
            "batch_norm_folded": bundle.batch_norm_folded,
            "batch_norm_left": bundle.batch_norm_left,
            "fold_max_abs_diff": bundle.fold_max_abs_diff,
            "fp32_accuracy": bundle.fp32_accuracy,
            "val_rows": bundle.val_rows,
            "variants": [
                {
                    "name": v.name,
                    "file": Path(v.path).name,
                    "accuracy": v.accuracy,
                    "accuracy_delta": v.accuracy_delta,
                    "max_abs_diff": v.max_abs_diff,
                    "size_bytes": v.size_bytes,
                    "latency_ms": v.latency_ms,
                }
                for v in bundle.variants
            ],
        },
        "intended_use": config.export.intended_use,
        "limitations": list(config.export.limitations),
    }


def _markdown(card: dict[str, Any]) -> str:
    lines = [
        *_overview_lines(card),
        *_metric_lines(card["metrics"]),
        *_gate_lines(card["gate"]),
        *_export_lines(card["export"]),
        *_variant_table(card["export"]["variants"]),
        *_config_lines(card["config"]),
    ]
    return "\n".join(lines) + "\n"


def _overview_lines(card: dict[str, Any]) -> list[str]:
    return [
        f"# Model card: {card['model_name']} v{card['model_version']}",
        "",
        f"- Created: {card['created']}",
        f"- Git commit: `{card['git_commit']}`",
        f"- Data hash: `{card['dataset_hash']}`",
        f"- Classes: {', '.join(card['class_names'])}",
        f"- Registry aliases at export: {', '.join(card['aliases'])}",
        f"- Size: {card['complexity']['parameters']:,} parameters, "
        f"{card['complexity']['macs']:,} multiply-accumulates per row "
        f"({card['complexity']['flops']:,} FLOPs)",
        "",
        "## Use it",
        "",
        f'`mlflow.pyfunc.load_model("models:/{card["model_name"]}/{card["model_version"]}")'
        ".predict(rows)` returns `label` (the class name per row) and `probabilities`. Rows are "
        "raw float32 features (NaNs filled inside the model where data-prep filled them). It "
        "needs MLflow, numpy, ONNX and ONNX Runtime, not Graft or torch.",
        "",
        "## Intended use",
        "",
        card["intended_use"],
        "",
        "## Limitations",
        "",
        *[f"- {item}" for item in card["limitations"]],
        "",
    ]


def _metric_lines(metrics: dict[str, float]) -> list[str]:
    lines = ["## Metrics (test split)", "", "| metric | value |", "| --- | --- |"]
    for key, value in metrics.items():
        lines.append(f"| {METRIC_LABELS.get(key, key)} | {value:.4f} |")
    return lines


def _gate_lines(gate: dict[str, Any]) -> list[str]:
    return [
        "",
        f"## Promotion gate: {'passed' if gate['passed'] else 'refused'}",
        "",
        *[f"- {reason}" for reason in gate["reasons"]],
    ]


def _export_lines(export: dict[str, Any]) -> list[str]:
    return [
        "",
        "## Export",
        "",
        f"ONNX opset {export['onnx_opset']}. Parity with PyTorch on a fixed batch: "
        f"TorchScript {export['torchscript_max_abs_diff']:.2e}, "
        f"ONNX Runtime {export['onnx_max_abs_diff']:.2e} "
        f"(limit {export['parity_atol']:.0e}). "
        f"BatchNorm layers folded: {export['batch_norm_folded']} "
        f"(logit change {export['fold_max_abs_diff']:.2e}); "
        f"left: {export['batch_norm_left']}.",
        "",
        f"Variants on the {export['val_rows']} validation rows "
        f"(fp32 PyTorch accuracy {export['fp32_accuracy']:.4f}):",
        "",
    ]


def _variant_table(variants: list[dict[str, Any]]) -> list[str]:
    """One row per variant, one latency column per batch size any variant was timed at."""
    batches = sorted(
        {key for v in variants for key in v["latency_ms"]},
        key=lambda key: int(key.split("_")[1]),
    )
    header = ["variant", "file", "accuracy", "delta", "max abs diff", "size (KiB)"]
    header += [f"median ms, {b.replace('_', ' ')}" for b in batches]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for v in variants:
        cells = [
            v["name"],
            f"`{v['file']}`",
            f"{v['accuracy']:.4f}",
            f"{v['accuracy_delta']:+.4f}",
            f"{v['max_abs_diff']:.2e}",
            f"{v['size_bytes'] / 1024:.1f}",
        ] + [f"{v['latency_ms'].get(b, float('nan')):.3f}" for b in batches]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _config_lines(config: dict[str, Any]) -> list[str]:
    lines = ["", "## Configuration (summary)", "", "| key | value |", "| --- | --- |"]
    for key, value in config.items():
        lines.append(f"| {key} | {json.dumps(value)} |")
    return lines


def write_model_card(card: dict[str, Any], output_dir: Path) -> tuple[Path, Path]:
    json_path = output_dir / "model_card.json"
    md_path = output_dir / MODEL_CARD_MARKDOWN
    json_path.write_text(json.dumps(card, indent=2))
    md_path.write_text(_markdown(card))
    return json_path, md_path
