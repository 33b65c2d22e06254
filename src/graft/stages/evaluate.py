"""The evaluate stage: the model's test-split metrics against the majority and linear
baselines and the registered champion, the recipe comparisons that retrain, and the gate.

The only stage that reads the sealed test split, and once per model (the test-split ledger,
:mod:`graft.evaluate.ledger`).
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from graft.config import GraftConfig
from graft.data.holdout import HoldoutManifest, load_holdout
from graft.data.manifest import DataManifest
from graft.data.prepare import load_split
from graft.errors import ConfigError
from graft.evaluate.baselines import linear_baseline_predictions
from graft.evaluate.gate import GateDecision, decide
from graft.evaluate.ledger import check_first_look, claim_first_look, model_fingerprint
from graft.evaluate.metrics import ClassificationReport, classification_report, majority_baseline
from graft.evaluate.paired import PairedComparison, comparison_metrics, paired_comparison
from graft.evaluate.plots import plot_confusion
from graft.evaluate.shuffle_control import label_shuffle_control
from graft.evaluate.summary import EvaluationSummary, summarize, write_summary
from graft.evaluate.transfer_report import plot_transfer_report, transfer_vs_scratch
from graft.evaluate.uncertainty import MCDropoutReport, mc_dropout_evaluation
from graft.export.raw_inputs import raw_rows
from graft.io import tracking
from graft.nn.models import GraftNet
from graft.stages.common import accuracy, predict
from graft.stages.outputs import EvaluateOutput
from graft.stages.retraining import finetune_retraining
from graft.train.champion import Champion, load_champion
from graft.train.model_dir import MODEL_FILE, SPEC_FILE, load_checkpoint_model
from graft.train.stage_requests import finetune_request

log = logging.getLogger(__name__)

Rows = tuple[np.ndarray, np.ndarray]


@dataclass
class _TestScores:
    """The model's scores on the test rows, and the baselines' it is set against."""

    report: ClassificationReport
    summary: EvaluationSummary
    majority: int  # the majority baseline's class
    baseline: float  # the majority baseline's accuracy
    champion: float | None  # the registered champion's accuracy, when comparable
    metrics: dict[str, float]  # the scalar test metrics before the summary's
    # per test row, whether each predictor is right: "model", "majority", "linear", and
    # "champion" when comparable (what the paired tests compare)
    correct: dict[str, np.ndarray]
    # the version the champion alias pointed to (compared or not): export's compare-and-set
    champion_version: str | None = None


def run(
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
    a model already scored on these test rows by another pipeline run is refused before they
    are read, unless ``evaluate.allow_repeat_test`` (see :mod:`graft.evaluate.ledger`).

    The champion is read first: a registry that cannot answer fails the stage (RegistryError)
    rather than pass the gate as if there were no champion. gate.json records the version the
    model was compared with (``champion_version``), which export moves the alias from."""
    look = _test_look(model_dir, test_split_dir)
    check_first_look(config, *look, parent_run_id)  # a repeat is refused before anything
    with tracking.stage_run(config, parent_run_id, "evaluate") as run_id:
        champion = load_champion(config)
        claim_first_look(config, run_id, parent_run_id, *look)
        paths = (dataset_dir, test_split_dir, model_dir, output_dir, pretrained_dir)
        return _evaluate(config, run_id, champion, *paths)


def _evaluate(
    config: GraftConfig,
    run_id: str,
    champion: Champion | None,
    dataset_dir: str,
    test_split_dir: str,
    model_dir: str,
    output_dir: str,
    pretrained_dir: str,
) -> EvaluateOutput:
    """The evaluation, in evaluate run ``run_id`` once its look at the test rows is claimed."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest = DataManifest.read(dataset_dir)
    test = load_holdout(test_split_dir, "target", dataset_dir)
    train = load_split(dataset_dir, "target", "train")
    model, _ = load_checkpoint_model(model_dir)
    scores = _score(config, model, manifest, train, test, champion)
    recipe = _recipe_comparisons(config, dataset_dir, pretrained_dir, train, test, out)
    paired = _paired_tests(config, scores.correct)
    decision = decide(
        config.evaluate,
        scores.report.accuracy,
        scores.baseline,
        paired.get("champion"),
        linear=paired["linear"],
        majority=paired["majority"],
        calibration_error=scores.summary.metrics.get("test_ece"),
        control_accuracy=recipe.get("label_shuffle_control_accuracy"),
    )
    if config.evaluate.mc_dropout.enabled:
        scores.summary.mc_dropout = _mc_dropout(config, model, test)
    metrics = {**scores.metrics, **scores.summary.metrics, **recipe, **comparison_metrics(paired)}
    if scores.champion is not None:
        metrics["champion_accuracy"] = scores.champion
    _write_evaluation(config, out, metrics, scores, decision)
    tags = {
        "graft.gate": "passed" if decision.passed else "refused",
        "graft.dataset_hash": manifest.dataset_hash,
        "graft.baseline_class": str(scores.majority),
    }
    _log_evaluation(config, run_id, out, metrics, scores, tags)
    return EvaluateOutput(
        evaluation_dir=str(out),
        run_id=run_id,
        accuracy=scores.report.accuracy,
        baseline_accuracy=scores.baseline,
        champion_accuracy=scores.champion,
        gate_passed=decision.passed,
        reasons=decision.reasons,
    )


def _test_look(model_dir: str, test_split_dir: str) -> tuple[str, str]:
    """What the ledger records of this look: the model's fingerprint, the test rows' digest."""
    split_digest = HoldoutManifest.read(test_split_dir).digests["target"]
    fingerprint = model_fingerprint(Path(model_dir) / SPEC_FILE, Path(model_dir) / MODEL_FILE)
    return fingerprint, split_digest


def _mc_dropout(config: GraftConfig, model: GraftNet, test: Rows) -> MCDropoutReport:
    mc = config.evaluate.mc_dropout
    return mc_dropout_evaluation(
        model,
        *test,
        mc.samples,
        config.seed if mc.seed is None else mc.seed,
        mc.latency_sample_counts,
    )


def _score(
    config: GraftConfig,
    model: GraftNet,
    manifest: DataManifest,
    train: Rows,
    test: Rows,
    champion: Champion | None,
) -> _TestScores:
    (x_train, y_train), (x_test, y_test) = train, test
    task = manifest.tasks["target"]
    probabilities = predict(model, x_test)
    report = classification_report(y_test, probabilities, len(task.classes))
    majority, baseline = majority_baseline(y_train, y_test)
    settings = config.evaluate
    linear = linear_baseline_predictions(
        x_train,
        y_train,
        x_test,
        settings.linear_baseline_max_iter,
        settings.linear_baseline_max_rows,
        config.seed,
    )
    correct = {
        "model": probabilities.argmax(1) == y_test,
        "majority": y_test == majority,
        "linear": linear == y_test,
    }
    champion_says = _champion_predictions(champion, x_test, y_test, manifest)
    if champion_says is not None:
        correct["champion"] = champion_says == y_test
    # eval mode (dropout off) on the train split: set against training's train accuracy
    train_accuracy_eval = accuracy(model, x_train, y_train)
    summary = summarize(settings, y_test, probabilities, task.class_names, report)
    metrics = {
        "test_accuracy": report.accuracy,
        "test_loss": report.loss,
        "test_macro_f1": report.macro_f1,
        "baseline_accuracy": baseline,
        "linear_baseline_accuracy": float(correct["linear"].mean()),
        "train_accuracy_eval": train_accuracy_eval,
    }
    champion_accuracy = float(correct["champion"].mean()) if "champion" in correct else None
    scores = _TestScores(report, summary, majority, baseline, champion_accuracy, metrics, correct)
    scores.champion_version = None if champion is None else champion.version
    return scores


def _paired_tests(
    config: GraftConfig, correct: dict[str, np.ndarray]
) -> dict[str, PairedComparison]:
    """The model against each other predictor on the same test rows (McNemar's exact test and
    a paired bootstrap seeded by ``seed``)."""
    settings = config.evaluate
    return {
        name: paired_comparison(
            correct["model"],
            other,
            alpha=settings.significance_alpha,
            resamples=settings.bootstrap_resamples,
            seed=config.seed,
        )
        for name, other in correct.items()
        if name != "model"
    }


def _champion_predictions(
    champion: Champion | None, x: np.ndarray, y: np.ndarray, manifest: DataManifest
) -> np.ndarray | None:
    """The registered champion's predicted class per test row; None without a champion, or
    when it predicts another label set."""
    if champion is None:
        return None
    if champion.fill is not None:
        # a served model fills NaNs itself: give it the rows as a client would send them
        x = raw_rows(x, manifest.missing_fill)
    probabilities = predict(champion.served(), x)
    if probabilities.shape[1] <= int(y.max()):
        log.warning("the champion predicts a different label set; it cannot be compared")
        return None
    return np.asarray(probabilities.argmax(1))


def _recipe_comparisons(
    config: GraftConfig,
    dataset_dir: str,
    pretrained_dir: str,
    train: Rows,
    scored: Rows,
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
    request = finetune_request(config, dataset_dir, pretrained_dir, out / "recipe", None)
    retraining = finetune_retraining(request)
    values: dict[str, float] = {}
    if control.enabled:
        values["label_shuffle_control_accuracy"] = label_shuffle_control(
            retraining, train, scored, control.seed
        )
    if ab.enabled:
        report = transfer_vs_scratch(retraining, train, scored, list(range(ab.seeds)))
        (out / "transfer_vs_scratch.json").write_text(json.dumps(report.to_dict(), indent=2))
        plot_transfer_report(report, out / "transfer_vs_scratch.png", "test")
        values.update(report.metrics())
    shutil.rmtree(out / "recipe", ignore_errors=True)  # starting weights, not a result
    return values


def _write_evaluation(
    config: GraftConfig,
    out: Path,
    metrics: dict[str, float],
    scores: _TestScores,
    decision: GateDecision,
) -> None:
    """metrics.json, gate.json, the confusion matrix and the summary's files and page."""
    class_names = scores.summary.class_names
    (out / "metrics.json").write_text(
        json.dumps(
            {**metrics, "report": asdict(scores.report), "class_names": class_names}, indent=2
        )
    )
    gate = {**asdict(decision), "champion_version": scores.champion_version}
    (out / "gate.json").write_text(json.dumps(gate, indent=2))
    plot_confusion(scores.report.confusion, class_names, out / "confusion_matrix.png")
    write_summary(scores.summary, metrics, decision, out, title=f"Graft evaluation: {config.name}")


def _log_evaluation(
    config: GraftConfig,
    run_id: str,
    out: Path,
    metrics: dict[str, float],
    scores: _TestScores,
    tags: dict[str, str],
) -> None:
    """Into the evaluate run: metrics, per-class F1, tags and the evaluation folder."""
    logger = tracking.logger_for(config, run_id)
    logger.metrics(metrics, step=0)
    names = scores.summary.class_names
    per_class = {f"f1_{name}": f1 for name, f1 in zip(names, scores.report.f1, strict=True)}
    logger.metrics(per_class, step=0)
    logger.tags(tags)
    logger.artifact(out, "evaluation")
