"""What the KFP UI shows of a run: each stage's figures as ``Metrics``, evaluate's confusion
matrix and (binary tasks) ROC curve, and the evaluation page, the tune report and the model
card as HTML/Markdown outputs. Adapters fill them; here they are called as the components
call them, with KFP's own artifact classes, on the tiny preset (no Ray: the tune stage runs
with tune.enabled=false, which hands on the finetuned model and still writes its report)."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from kfp.dsl import ClassificationMetrics, Metrics
from sklearn.metrics import roc_auc_score

from graft.config import load_config
from graft.evaluate.metrics import roc_curve
from graft.kfp import adapters
from graft.kfp.compile import PIPELINE_FILE
from graft.tune.html_report import render_tune_report

ROOT = Path(__file__).resolve().parents[2]


# ----------------------------------------------------------------------------- compiled IR


def test_components_declare_the_outputs_the_ui_shows() -> None:
    spec = next(yaml.safe_load_all((ROOT / "pipelines" / PIPELINE_FILE).read_text()))
    outputs = {
        name.removeprefix("comp-"): {
            output: artifact["artifactType"]["schemaTitle"]
            for output, artifact in component["outputDefinitions"]["artifacts"].items()
        }
        for name, component in spec["components"].items()
        if "artifacts" in component.get("outputDefinitions", {})  # the exit task has none
    }
    assert outputs["pretrain"]["metrics"] == "system.Metrics"
    assert outputs["transfer-finetune"]["metrics"] == "system.Metrics"
    assert outputs["tune"]["metrics"] == "system.Metrics"
    assert outputs["tune"]["report"] == "system.HTML"
    assert outputs["evaluate"]["metrics"] == "system.Metrics"
    assert outputs["evaluate"]["classification"] == "system.ClassificationMetrics"
    assert outputs["evaluate"]["report"] == "system.HTML"
    assert outputs["export"]["model_card"] == "system.Markdown"
    assert outputs["data-prep"]["data_report"] == "system.HTML"


# ----------------------------------------------------------------------------- ROC


def test_roc_curve_matches_hand_computed_points_with_ties() -> None:
    y = np.array([0, 0, 1, 1, 0, 1])
    scores = np.array([0.1, 0.4, 0.4, 0.8, 0.9, 0.95])
    roc = roc_curve(y, scores)
    assert roc is not None
    # thresholds 0.95, 0.9, 0.8, 0.4 (two rows tied: one positive, one negative), 0.1
    assert roc.true_positive_rate == pytest.approx([0, 1 / 3, 1 / 3, 2 / 3, 1, 1])
    assert roc.false_positive_rate == pytest.approx([0, 0, 1 / 3, 1 / 3, 2 / 3, 1])
    assert roc.thresholds[1:] == [0.95, 0.9, 0.8, 0.4, 0.1]
    assert roc.thresholds[0] > 0.95  # nothing is flagged at the first point
    assert roc.auc == pytest.approx(roc_auc_score(y, scores))


def test_roc_curve_is_thinned_for_the_ui_but_keeps_its_ends_and_auc() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 5000)
    scores = np.clip(0.3 * y + rng.uniform(0, 0.7, 5000), 0, 1)
    roc = roc_curve(y, scores, max_points=101)
    assert roc is not None
    assert len(roc.false_positive_rate) == len(roc.true_positive_rate) == len(roc.thresholds)
    assert len(roc.thresholds) <= 101
    assert (roc.false_positive_rate[0], roc.true_positive_rate[0]) == (0.0, 0.0)
    assert (roc.false_positive_rate[-1], roc.true_positive_rate[-1]) == (1.0, 1.0)
    assert np.all(np.diff(roc.false_positive_rate) >= 0)
    assert np.all(np.diff(roc.thresholds) < 0)
    assert roc.auc == pytest.approx(roc_auc_score(y, scores))


def test_no_roc_when_the_test_rows_hold_one_class() -> None:
    assert roc_curve(np.array([1, 1, 1]), np.array([0.2, 0.5, 0.9])) is None


# ----------------------------------------------------------------------------- tune report


def test_tune_report_lists_best_params_every_trial_and_embeds_the_plots(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    plot = tmp_path / "metric_by_trial.png"
    fig.savefig(plot)
    plt.close(fig)
    trials = pd.DataFrame(
        {
            "trial_id": ["a_00000", "a_00001", "a_00002"],
            "outcome": ["completed", "cut", "before_first_epoch"],
            "epoch": [8, 2, np.nan],
            "val_accuracy": [0.91, 0.72, np.nan],
            "config/finetune.optimizer.lr": [0.003, 0.02, 0.0005],
            "hostname": ["h", "h", "h"],
        }
    )
    page = render_tune_report(
        "Graft tune: x",
        {"handed on": "the best trial's model", "trials": 3},
        {"finetune.optimizer.lr": 0.003},
        trials,
        "val_accuracy",
        ["finetune.optimizer.lr"],
        [plot, tmp_path / "missing.png"],
    )
    assert page.count("<tr>") == (1 + 2) + (1 + 1) + (1 + 3)  # header + rows, per table
    assert "before_first_epoch" in page and "a_00002" in page
    assert "finetune.optimizer.lr" in page and "hostname" not in page
    assert page.count("<img ") == 1
    assert ">nan<" not in page.split("<img ")[0].lower()  # a missing value is an empty cell


# ----------------------------------------------------------------------------- adapters


@pytest.fixture(scope="module")
def tiny_run(
    tmp_path_factory: pytest.TempPathFactory, untrained_model_dir: Callable[..., Path]
) -> dict[str, Any]:
    """data-prep through the adapter, and an untrained model of the binary target task."""
    root = tmp_path_factory.mktemp("kfp-outputs")
    config = load_config(
        preset="tiny",
        overrides=[
            f"work_dir={root / 'work'}",
            f"tracking.tracking_uri=sqlite:///{root / 'mlflow.db'}",
            "tracking.experiment_name=kfp-outputs",
            "evaluate.linear_baseline_max_iter=20",
            # no retraining in evaluate, no search in tune: nothing here starts Ray
            "evaluate.label_shuffle_control.enabled=false",
            "evaluate.transfer_report.enabled=false",
            "tune.enabled=false",
        ],
    )
    config_json = config.to_json()
    digest = root / "outputs" / "data_digest"
    parent = adapters.open_run(config_json, "kfp-outputs", str(digest), str(root / "branch"))
    adapters.data_prep(
        config_json,
        digest.read_text(),
        str(root / "dataset"),
        str(root / "test_split"),
        str(root / "data_report.html"),
    )
    model = untrained_model_dir(config, root / "dataset", root / "model", "target", seed=3)
    return {"root": root, "config_json": config_json, "parent": parent, "model": str(model)}


def _metrics(name: str) -> Metrics:
    """A Metrics output whose file goes where a task's would: a local path of its own."""
    return Metrics(name=name, uri=str(Path(tempfile.mkdtemp()) / name), metadata={})


def test_evaluate_logs_metrics_confusion_roc_and_the_report(tiny_run: dict[str, Any]) -> None:
    root = tiny_run["root"]
    metrics = _metrics("metrics")
    classification = ClassificationMetrics(name="classification", uri="", metadata={})
    report = root / "evaluation_report.html"
    passed = adapters.evaluate(
        tiny_run["config_json"],
        str(root / "dataset"),
        str(root / "test_split"),
        tiny_run["model"],
        str(root / "evaluation"),
        metrics,
        classification,
        str(report),
        tiny_run["parent"],
    )
    written = json.loads((root / "evaluation" / "metrics.json").read_text())
    assert metrics.metadata["gate_passed"] == float(passed)
    for name in ("test_accuracy", "baseline_accuracy", "test_ece", "test_roc_auc"):
        assert metrics.metadata[name] == pytest.approx(written[name])
    # the tiny preset's target task is binary (digits 3 vs 8): confusion matrix and ROC
    categories = [
        a["displayName"] for a in classification.metadata["confusionMatrix"]["annotationSpecs"]
    ]
    assert len(categories) == 2
    curve = classification.metadata["confidenceMetrics"]
    assert len(curve) >= 3
    ends = [(p["falsePositiveRate"], p["recall"]) for p in (curve[0], curve[-1])]
    assert ends == [(0.0, 0.0), (1.0, 1.0)]
    thresholds = [p["confidenceThreshold"] for p in curve]
    assert thresholds == sorted(thresholds, reverse=True)
    page = report.read_text()
    assert page.startswith("<!doctype html>") and "test_roc_auc" in page
    _assert_paired_tests_published(root, metrics, written, page)


def _assert_paired_tests_published(
    root: Path, metrics: Metrics, written: dict[str, Any], page: str
) -> None:
    """The model vs the linear and majority baselines on the same rows: difference, interval
    and p-value in metrics.json, the KFP metrics, MLflow, gate.json and the report."""
    from mlflow.tracking import MlflowClient

    gate = json.loads((root / "evaluation" / "gate.json").read_text())
    assert set(gate["comparisons"]) == {"linear", "majority"}  # no champion registered
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("kfp-outputs")
    (run,) = client.search_runs(
        [experiment.experiment_id], filter_string="tags.`graft.stage` = 'evaluate'"
    )
    for against in ("linear", "majority"):
        test = gate["comparisons"][against]
        for field in ("difference", "ci_low", "ci_high", "p_value"):
            name = f"vs_{against}_{field}"
            assert written[name] == pytest.approx(test[field])
            assert metrics.metadata[name] == pytest.approx(test[field])
            assert run.data.metrics[name] == pytest.approx(test[field])
        assert test["ci_low"] <= test["difference"] <= test["ci_high"]
    linear = gate["comparisons"]["linear"]
    assert linear["difference"] == pytest.approx(
        written["test_accuracy"] - written["linear_baseline_accuracy"]
    )
    assert any("the linear baseline" in reason for reason in gate["reasons"])
    assert "id='paired-tests'" in page and "id='linear-verdict'" in page


def test_evaluate_logs_no_roc_for_a_multiclass_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fashion-MNIST's ten classes: the confusion matrix only (the stage is faked here)."""
    from graft import stages

    evaluation = tmp_path / "evaluation"
    evaluation.mkdir()
    written = {
        "test_accuracy": 0.5,
        "report": {"confusion": np.eye(3, dtype=int).tolist()},
        "class_names": ["c0", "c1", "c2"],
    }
    (evaluation / "metrics.json").write_text(json.dumps(written))
    (evaluation / "report.html").write_text("<!doctype html>")
    scored = stages.EvaluateOutput(str(evaluation), "run", 0.5, 0.3, None, True)
    monkeypatch.setattr(stages.evaluate, "run", lambda *args, **kwargs: scored)
    metrics = _metrics("metrics")
    classification = ClassificationMetrics(name="classification", uri="", metadata={})
    adapters.evaluate(
        load_config(preset="tiny").to_json(),
        "dataset",
        "test_split",
        "model",
        str(evaluation),
        metrics,
        classification,
        str(tmp_path / "report.html"),
        "parent",
    )
    assert "confusionMatrix" in classification.metadata
    assert "confidenceMetrics" not in classification.metadata
    assert metrics.metadata == {"test_accuracy": 0.5, "gate_passed": 1.0}


def test_tune_writes_its_report_and_figures_without_a_search(tiny_run: dict[str, Any]) -> None:
    root = tiny_run["root"]
    metrics = _metrics("metrics")
    report = root / "tune_report.html"
    adapters.tune(
        tiny_run["config_json"],
        str(root / "dataset"),
        tiny_run["model"],
        tiny_run["model"],
        str(root / "tune" / "best_model"),
        tiny_run["parent"],
        metrics,
        str(report),
    )
    assert metrics.metadata["tuned_model_handed_on"] == 0.0
    assert metrics.metadata["trials"] == 0.0
    assert 0.0 <= metrics.metadata["val_accuracy"] <= 1.0
    page = report.read_text()
    assert "tune.enabled=false" in page and "untuned" in page


def test_tune_report_of_a_search_reaches_the_ui(
    tiny_run: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The search itself (Ray Tune) is faked: what the tune stage makes of its result is not."""
    from graft import stages
    from graft.tune import search

    root = tiny_run["root"] / "searched"
    root.mkdir()
    trials = root / "trials.csv"
    pd.DataFrame(
        {
            "trial_id": ["t_00000", "t_00001"],
            "outcome": ["completed", "cut"],
            "val_accuracy": [0.81, 0.64],
            "config/finetune.optimizer.lr": [0.004, 0.03],
        }
    ).to_csv(trials, index=False)
    found = search.SearchResult(
        best_params={"finetune.optimizer.lr": 0.004},
        best_metric=0.81,
        best_checkpoint_dir=tiny_run["model"],
        trials_table=str(trials),
        num_trials=2,
        num_stopped_early=1,
        total_epochs=9,
        best_trial_id="t_00000",
    )
    monkeypatch.setattr(search, "run_search", lambda *args, **kwargs: found)
    monkeypatch.setattr(stages.tune, "ensure_ray", lambda *args: None)
    metrics = _metrics("metrics")
    report = root / "tune_report.html"
    adapters.tune(
        tiny_run["config_json"],
        str(tiny_run["root"] / "dataset"),
        tiny_run["model"],
        tiny_run["model"],
        str(root / "best_model"),
        tiny_run["parent"],
        metrics,
        str(report),
        adapters.RunParameters(overrides=["tune.enabled=true", "tune.lr_finder.enabled=false"]),
    )
    assert metrics.metadata["trials"] == 2.0
    assert metrics.metadata["trials_stopped_early"] == 1.0
    page = report.read_text()
    assert "t_00001" in page and "cut" in page and "0.0040" in page
