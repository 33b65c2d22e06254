"""The six stages: typed inputs (config, URIs/paths) -> typed outputs.

KFP components and the CLI call these and nothing else; tests exercise them without KFP.
Each stage writes into its own MLflow run nested under the pipeline's parent run.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from graft.config import LR_SEARCH_KEY, GraftConfig
from graft.data.holdout import HoldoutManifest, default_holdout_dir, load_holdout
from graft.data.manifest import DataManifest
from graft.data.prepare import load_split, prepare_dataset
from graft.data.splits import SPLIT_MANIFEST_FILE, read_task_splits
from graft.errors import ConfigError
from graft.evaluate.finetune_cv import cross_validate_finetune
from graft.evaluate.gate import decide
from graft.evaluate.metrics import classification_report, majority_baseline
from graft.evaluate.plots import plot_confusion, plot_learning_curves
from graft.io import tracking
from graft.io.ray_runtime import ensure_ray, train_storage
from graft.remote.command import StageInputs
from graft.remote.dispatch import run_stage_on_cluster
from graft.train.fit import FitResult, fit
from graft.train.loop import load_checkpoint_model
from graft.train.requests import finetune_request, pretrain_request

log = logging.getLogger(__name__)


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


def _run_name_key(parent_run_id: str) -> str:
    return parent_run_id[:12]


def data_prep(
    config: GraftConfig,
    output_dir: str,
    kfp_run_id: str = "local",
    parent_run_id: str = "",
    test_split_dir: str = "",
) -> DataPrepOutput:
    """Prepare the dataset (train/val) into ``output_dir`` and the sealed test rows into
    ``test_split_dir`` (default ``<output_dir>-test``); log each task's split manifests as
    MLflow dataset inputs of the data-prep run."""
    holdout = test_split_dir or str(default_holdout_dir(output_dir))
    manifest = prepare_dataset(config.data, config.seed, output_dir, holdout)
    parent = parent_run_id or tracking.start_pipeline_run(config, kfp_run_id)
    client = tracking.client_for(config)
    client.set_tag(parent, "graft.dataset_hash", manifest.dataset_hash)
    with tracking.stage_run(config, parent, "data-prep") as run_id:
        logger = tracking.logger_for(config, run_id)
        logger.tags({"graft.dataset_hash": manifest.dataset_hash})
        sizes = {
            f"{task}_{split}_rows": float(n)
            for task, info in manifest.tasks.items()
            for split, n in info.sizes.items()
        }
        logger.metrics(
            {**sizes, "duplicates_dropped": manifest.duplicates.exact_duplicates_dropped}, step=0
        )
        for name in ("manifest.json", "report.json", "report.html"):
            logger.artifact(Path(output_dir) / name, "data")
        splits = read_task_splits(Path(output_dir) / SPLIT_MANIFEST_FILE)
        tracking.log_split_inputs(config, run_id, splits, manifest.dataset_hash)
    log.info("data-prep: %d rows, hash %s", manifest.num_rows, manifest.dataset_hash)
    return DataPrepOutput(str(output_dir), parent, manifest.dataset_hash, holdout)


def _log_fit(config: GraftConfig, run_id: str, result: FitResult, title: str) -> None:
    logger = tracking.logger_for(config, run_id)
    if result.history:
        plot = plot_learning_curves(
            result.history, title, Path(result.model_dir) / "learning_curves.png"
        )
        logger.artifact(plot, "plots")
    logger.dict({"history": result.history}, "history.json")
    # the checkpoint index: where the final checkpoint lives in Ray Train's storage
    logger.tags({"graft.checkpoint_path": result.checkpoint_path})


def _train_output(result: FitResult, run_id: str) -> TrainOutput:
    """The monitored best epoch's validation figures (the weights restored at the end)."""
    # an autoencoder pretrain has no accuracy: its best epoch has the lowest reconstruction loss
    best = max(
        result.history,
        key=lambda h: h.get("val_accuracy", -h["val_loss"]),
        default=result.final_metrics,
    )
    return TrainOutput(
        model_dir=result.model_dir,
        run_id=run_id,
        val_accuracy=float(best.get("val_accuracy", 0.0)),
        val_loss=float(best.get("val_loss", 0.0)),
        epochs_run=len(result.history),
    )


def pretrain(
    config: GraftConfig, dataset_dir: str, output_dir: str, parent_run_id: str
) -> TrainOutput:
    if config.ray.runs_stages_elsewhere:
        inputs = StageInputs(dataset_dir, output_dir, parent_run_id)
        return TrainOutput(**run_stage_on_cluster(config, "pretrain", inputs))
    ensure_ray(config.ray)
    with tracking.stage_run(config, parent_run_id, "pretrain") as run_id:
        tracking.logger_for(config, run_id).params(
            tracking.flatten(config.pretrain.model_dump(mode="json"), "pretrain.")
        )
        request = pretrain_request(config, dataset_dir, run_id)
        train_store = train_storage(config.ray, config.work_path / "ray")
        result = fit(
            request,
            num_workers=config.pretrain.num_workers,
            resources=config.pretrain.resources,
            storage_path=train_store.path,
            storage_filesystem=train_store.filesystem,
            run_name=f"pretrain-{_run_name_key(parent_run_id)}",
            output_dir=Path(output_dir),
            max_failures=config.pretrain.checkpoint.max_failures,
            num_to_keep=config.pretrain.checkpoint.num_to_keep,
        )
        _log_fit(config, run_id, result, "pretrain (source task)")
    return _train_output(result, run_id)


def finetune(
    config: GraftConfig,
    dataset_dir: str,
    pretrained_dir: str,
    output_dir: str,
    parent_run_id: str,
) -> TrainOutput:
    if config.ray.runs_stages_elsewhere:
        inputs = StageInputs(dataset_dir, output_dir, parent_run_id, pretrained_dir)
        return TrainOutput(**run_stage_on_cluster(config, "transfer-finetune", inputs))
    ensure_ray(config.ray)
    with tracking.stage_run(config, parent_run_id, "transfer-finetune") as run_id:
        tracking.logger_for(config, run_id).params(
            tracking.flatten(config.finetune.model_dump(mode="json"), "finetune.")
        )
        request = finetune_request(
            config, dataset_dir, pretrained_dir, Path(output_dir) / "scratch", run_id
        )
        train_store = train_storage(config.ray, config.work_path / "ray")
        result = fit(
            request,
            num_workers=config.finetune.num_workers,
            resources=config.finetune.resources,
            storage_path=train_store.path,
            storage_filesystem=train_store.filesystem,
            run_name=f"finetune-{_run_name_key(parent_run_id)}",
            output_dir=Path(output_dir),
            max_failures=config.finetune.checkpoint.max_failures,
            num_to_keep=config.finetune.checkpoint.num_to_keep,
        )
        _log_fit(config, run_id, result, "transfer-finetune (target task)")
        if config.evaluate.protocol.name != "holdout":
            # small target task: also estimate accuracy with K-fold (fresh model per fold)
            cross_validate_finetune(config, request, Path(output_dir), run_id)
    return _train_output(result, run_id)


def tune(
    config: GraftConfig,
    dataset_dir: str,
    pretrained_dir: str,
    finetuned_dir: str,
    output_dir: str,
    parent_run_id: str,
) -> TuneOutput:
    """Search the finetune space; hand on the best model, the untuned one if it was better.

    Both candidates are re-scored on the validation split here, since a trial's last report
    may predate its restored-best weights. ``finetuned_dir`` may be empty (``graft tune`` on
    its own): the best trial is then handed on as is.

    The Tune experiment is named after ``parent_run_id``: a retry with the same parent (a KFP
    retry, ``graft tune --resume``) resumes it, reuses its MLflow runs and does not rerun the
    trials that finished."""
    import pandas as pd

    from graft.tune.html_report import write_tune_report
    from graft.tune.runs import tag_best_trial, tune_stage_run

    if config.ray.runs_stages_elsewhere:
        inputs = StageInputs(dataset_dir, output_dir, parent_run_id, pretrained_dir, finetuned_dir)
        return TuneOutput(**run_stage_on_cluster(config, "tune", inputs))
    out = Path(output_dir)
    finetuned_val_accuracy = (
        validation_accuracy(dataset_dir, finetuned_dir) if finetuned_dir else float("-inf")
    )
    experiment_name = f"tune-{_run_name_key(parent_run_id)}"
    with tune_stage_run(config, parent_run_id, experiment_name) as run_id:
        logger = tracking.logger_for(config, run_id)
        if not config.tune.enabled:
            if not finetuned_dir:
                raise ConfigError(
                    "tune.enabled=false and no finetuned model to hand on; enable tuning or "
                    "pass the finetuned model directory"
                )
            logger.tags({"graft.tune": "disabled"})
            report = write_tune_report(
                out,
                title=f"Graft tune: {config.name}",
                summary={
                    "search": "not run (tune.enabled=false)",
                    "handed on": "the finetuned model, untuned",
                    "validation accuracy": finetuned_val_accuracy,
                },
                best_params={},
            )
            logger.artifact(report, "tune")
            return TuneOutput(finetuned_dir, run_id, finetuned_val_accuracy, {}, "finetune")
        from graft.tune.search import run_search

        if config.tune.lr_finder.enabled and LR_SEARCH_KEY in config.tune.space:
            from graft.tune.lr_range import narrow_lr_range

            config, lr_range = narrow_lr_range(
                config, dataset_dir, pretrained_dir, out / "lr_finder"
            )
            logger.metrics(lr_range.metrics(), step=0)
            logger.artifact(lr_range.plot, "tune/lr_finder")
        ensure_ray(config.ray)
        result = run_search(
            config,
            dataset_dir,
            pretrained_dir,
            out,
            tune_run_id=run_id,
            experiment_name=experiment_name,
        )
        logger.params({f"best.{k}": v for k, v in result.best_params.items()})
        logger.metrics(
            {
                f"best_{config.tune.metric}": result.best_metric,
                "trials": result.num_trials,
                "trials_stopped_early": result.num_stopped_early,
                "trials_before_first_epoch": result.num_before_first_epoch,
                "trial_epochs": result.total_epochs,
            },
            step=0,
        )
        logger.artifact(result.trials_table, "tune")
        for plot in result.plots:
            logger.artifact(plot, "tune/plots")
        best_run = tag_best_trial(config, run_id, result.best_trial_id)
        logger.tags(
            {"graft.tune.best_trial_id": result.best_trial_id}
            | ({"graft.tune.best_trial_run_id": best_run} if best_run else {})
        )
        tuned_val_accuracy = validation_accuracy(dataset_dir, result.best_checkpoint_dir)
        tuned_better = tuned_val_accuracy >= finetuned_val_accuracy
        logger.tags({"graft.tune.winner": "tuned" if tuned_better else "finetune"})
        report = write_tune_report(
            out,
            title=f"Graft tune: {config.name}",
            summary={
                "handed on": "the best trial's model"
                if tuned_better
                else "the untuned finetuned model (it scored higher on validation)",
                "tuned validation accuracy": tuned_val_accuracy,
                "untuned validation accuracy": finetuned_val_accuracy
                if finetuned_dir
                else "no finetuned model given",
                f"best trial's {config.tune.metric}": result.best_metric,
                "trials": result.num_trials,
                "stopped early": result.num_stopped_early,
                "stopped before their first epoch": result.num_before_first_epoch,
                "trial-epochs": result.total_epochs,
            },
            best_params=result.best_params,
            trials=pd.read_csv(result.trials_table),
            metric=config.tune.metric,
            space_keys=config.tune.space,
            plots=result.plots,
        )
        logger.artifact(report, "tune")
    return TuneOutput(
        model_dir=result.best_checkpoint_dir if tuned_better else finetuned_dir,
        run_id=run_id,
        val_accuracy=max(tuned_val_accuracy, finetuned_val_accuracy),
        best_params=result.best_params,
        source="tuned" if tuned_better else "finetune",
        trials=result.num_trials,
        stopped_early=result.num_stopped_early,
        before_first_epoch=result.num_before_first_epoch,
    )


def _predict(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(x.astype(np.float32)))
    return torch.softmax(logits, dim=1).numpy()


def _champion_accuracy(
    config: GraftConfig, x: np.ndarray, y: np.ndarray, manifest: DataManifest
) -> float | None:
    version = tracking.champion_version(config)
    if version is None:
        return None
    import mlflow.pytorch

    from graft.export.raw_inputs import RawInputModel, raw_rows

    mlflow.set_tracking_uri(config.resolved_tracking_uri())
    champion = mlflow.pytorch.load_model(f"models:/{config.export.model_name}@champion")
    if isinstance(champion, RawInputModel):
        # a served model fills NaNs itself: give it the rows as a client would send them
        x = raw_rows(x, manifest.missing_fill)
    probabilities = _predict(champion, x)
    if probabilities.shape[1] <= int(y.max()):
        log.warning("the champion predicts a different label set; it cannot be compared")
        return None
    return float((probabilities.argmax(1) == y).mean())


def validation_accuracy(dataset_dir: str, model_dir: str) -> float:
    """Accuracy of a saved model on the target validation split (what tune compares)."""
    x_val, y_val = load_split(dataset_dir, "target", "val")
    model, _ = load_checkpoint_model(model_dir)
    return float((_predict(model, x_val).argmax(1) == y_val).mean())


def evaluate(
    config: GraftConfig,
    dataset_dir: str,
    test_split_dir: str,
    model_dir: str,
    output_dir: str,
    parent_run_id: str,
    pretrained_dir: str = "",
) -> EvaluateOutput:
    """Test-split metrics vs the majority baseline and the registered champion; the gate.

    With ``pretrained_dir`` it can also train the finetune recipe in process for two
    comparisons scored on the same test rows: the label-shuffle control (the gate asks the
    model to beat it) and the transfer-vs-scratch A/B report over seeds.

    The only stage that reads the sealed test split (``test_split_dir``), and once per model:
    a model already scored on these test rows is refused before they are read, unless
    ``evaluate.allow_repeat_test`` (see :mod:`graft.evaluate.ledger`)."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest = DataManifest.read(dataset_dir)
    task = manifest.tasks["target"]
    from graft.evaluate.baselines import linear_baseline
    from graft.evaluate.ledger import check_first_look, model_fingerprint
    from graft.evaluate.summary import summarize, write_summary
    from graft.evaluate.uncertainty import mc_dropout_evaluation

    split_digest = HoldoutManifest.read(test_split_dir).digests["target"]
    ledger_tags = check_first_look(config, model_fingerprint(model_dir), split_digest)
    x_test, y_test = load_holdout(test_split_dir, "target", dataset_dir)
    x_train, y_train = load_split(dataset_dir, "target", "train")
    model, _ = load_checkpoint_model(model_dir)
    probabilities = _predict(model, x_test)
    report = classification_report(y_test, probabilities, len(task.classes))
    majority, baseline = majority_baseline(y_train, y_test)
    settings = config.evaluate
    linear = linear_baseline(
        x_train,
        y_train,
        x_test,
        y_test,
        settings.linear_baseline_max_iter,
        settings.linear_baseline_max_rows,
        config.seed,
    )
    # eval mode (dropout off) on the train split: set against training's train accuracy
    train_accuracy_eval = float((_predict(model, x_train).argmax(1) == y_train).mean())
    champion = _champion_accuracy(config, x_test, y_test, manifest)
    summary = summarize(settings, y_test, probabilities, task.class_names, report)
    recipe = _recipe_comparisons(
        config, dataset_dir, pretrained_dir, (x_train, y_train), (x_test, y_test), out
    )
    decision = decide(
        settings,
        report.accuracy,
        baseline,
        champion,
        calibration_error=summary.metrics.get("test_ece"),
        control_accuracy=recipe.get("label_shuffle_control_accuracy"),
    )
    mc = settings.mc_dropout
    if mc.enabled:
        summary.mc_dropout = mc_dropout_evaluation(
            model,
            x_test,
            y_test,
            mc.samples,
            config.seed if mc.seed is None else mc.seed,
            mc.latency_sample_counts,
        )
    metrics = {
        "test_accuracy": report.accuracy,
        "test_loss": report.loss,
        "test_macro_f1": report.macro_f1,
        "baseline_accuracy": baseline,
        "linear_baseline_accuracy": linear,
        "train_accuracy_eval": train_accuracy_eval,
        **summary.metrics,
        **recipe,
    }
    if champion is not None:
        metrics["champion_accuracy"] = champion
    (out / "metrics.json").write_text(
        json.dumps({**metrics, "report": asdict(report), "class_names": task.class_names}, indent=2)
    )
    (out / "gate.json").write_text(json.dumps(asdict(decision), indent=2))
    plot_confusion(report.confusion, task.class_names, out / "confusion_matrix.png")
    write_summary(summary, metrics, decision, out, title=f"Graft evaluation: {config.name}")
    with tracking.stage_run(config, parent_run_id, "evaluate") as run_id:
        logger = tracking.logger_for(config, run_id)
        logger.metrics(metrics, step=0)
        per_class = {f"f1_{name}": f1 for name, f1 in zip(task.class_names, report.f1, strict=True)}
        logger.metrics(per_class, step=0)
        logger.tags(
            {
                "graft.gate": "passed" if decision.passed else "refused",
                "graft.dataset_hash": manifest.dataset_hash,
                "graft.baseline_class": str(majority),
                **ledger_tags,
            }
        )
        logger.artifact(out, "evaluation")
    return EvaluateOutput(
        evaluation_dir=str(out),
        run_id=run_id,
        accuracy=report.accuracy,
        baseline_accuracy=baseline,
        champion_accuracy=champion,
        gate_passed=decision.passed,
        reasons=decision.reasons,
    )


def _recipe_comparisons(
    config: GraftConfig,
    dataset_dir: str,
    pretrained_dir: str,
    train: tuple[np.ndarray, np.ndarray],
    scored: tuple[np.ndarray, np.ndarray],
    out: Path,
) -> dict[str, float]:
    """The label-shuffle control and the A/B report, when configured: both retrain the
    finetune recipe (the config's, not the tuned trial's) from the pretrained backbone."""
    settings = config.evaluate
    control, ab = settings.label_shuffle_control, settings.transfer_report
    if not (control.enabled or ab.enabled):
        return {}
    if not pretrained_dir:
        raise ConfigError(
            "evaluate.label_shuffle_control / evaluate.transfer_report retrain the finetune "
            "recipe and need the pretrained model; pass it to the evaluate stage"
        )
    from graft.evaluate.shuffle_control import label_shuffle_control
    from graft.evaluate.transfer_report import plot_transfer_report, transfer_vs_scratch
    from graft.train.fold_fit import FinetuneStart

    request = finetune_request(config, dataset_dir, pretrained_dir, out / "recipe", None)
    start = FinetuneStart.from_request(request)
    values: dict[str, float] = {}
    if control.enabled:
        values["label_shuffle_control_accuracy"] = label_shuffle_control(
            start, train, scored, control.seed
        )
    if ab.enabled:
        report = transfer_vs_scratch(start, train, scored, list(range(ab.seeds)))
        (out / "transfer_vs_scratch.json").write_text(json.dumps(report.to_dict(), indent=2))
        plot_transfer_report(report, out / "transfer_vs_scratch.png", "test")
        values.update(report.metrics())
    shutil.rmtree(out / "recipe", ignore_errors=True)  # starting weights, not a result
    return values


def export(
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
    (:mod:`graft.export.raw_inputs`)."""
    import mlflow
    import mlflow.pytorch
    from mlflow.models import infer_signature

    from graft.export.bundle import build_export_bundle
    from graft.export.model_card import build_model_card, write_model_card
    from graft.export.raw_inputs import raw_rows, with_missing_fill

    out = Path(output_dir)
    model, spec = load_checkpoint_model(model_dir)
    manifest = DataManifest.read(dataset_dir)
    x_val, y_val = load_split(dataset_dir, "target", "val")
    # what a client sends: NaNs back where data-prep filled them
    x_val = raw_rows(x_val, manifest.missing_fill).astype(np.float32)
    example = torch.from_numpy(x_val[:8])
    bundle = build_export_bundle(
        model, example, x_val, y_val, out, config.export, missing_fill=manifest.missing_fill
    )
    served = with_missing_fill(model, manifest.missing_fill)
    files = bundle.files
    gate = json.loads((Path(evaluation_dir) / "gate.json").read_text())
    metrics = json.loads((Path(evaluation_dir) / "metrics.json").read_text())
    (out / "spec.json").write_text(spec.to_json())
    mlflow.set_tracking_uri(config.resolved_tracking_uri())
    mlflow.set_registry_uri(config.resolved_tracking_uri())
    with tracking.stage_run(config, parent_run_id, "export") as run_id:
        logger = tracking.logger_for(config, run_id)
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
        logger.metrics(export_metrics, step=0)
        logger.tags({"graft.dataset_hash": manifest.dataset_hash})
        with torch.no_grad():
            logits = served.eval()(example).numpy()
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pytorch.log_model(
                served,
                name="model",
                registered_model_name=config.export.model_name,
                serialization_format="pickle",
                signature=infer_signature(example.numpy(), logits),
                input_example=example.numpy(),
                pip_requirements=["torch==2.13.0", "graft"],
            )
        version = str(info.registered_model_version)
        aliases = ["challenger"]
        tracking.set_alias(config, "challenger", version)
        if gate["passed"]:
            tracking.set_alias(config, "champion", version)
            aliases.append("champion")
        client = tracking.client_for(config)
        name = config.export.model_name
        version_tags = {
            "gate": str(gate["passed"]),
            "gate_reasons": "; ".join(gate.get("reasons", [])),
            "test_accuracy": str(metrics["test_accuracy"]),
            "dataset_hash": manifest.dataset_hash,
            "onnx_opset": str(config.export.onnx_opset),
        }
        for variant in bundle.variants:
            if variant.name in ("int8_dynamic", "onnx_fp16"):
                tag = "quantized" if variant.name == "int8_dynamic" else "fp16"
                version_tags[f"{tag}_val_accuracy_delta"] = f"{variant.accuracy_delta:.6f}"
        for key, value in version_tags.items():
            client.set_model_version_tag(name, version, key, value)
        card = build_model_card(
            config,
            bundle,
            metrics,
            gate,
            manifest.dataset_hash,
            manifest.tasks["target"].class_names,
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
        torchscript=files.torchscript,
        onnx=files.onnx,
        gate_passed=bool(gate["passed"]),
        accuracy=float(metrics["test_accuracy"]),
        baseline_accuracy=float(metrics["baseline_accuracy"]),
    )
    (out / "summary.json").write_text(result.to_json())
    return result
