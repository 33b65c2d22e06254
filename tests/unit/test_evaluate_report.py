"""Evaluation people trust: calibration, the stakeholder view, baselines and the HTML report."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from graft.config import EvaluateConfig
from graft.evaluate.baselines import linear_baseline
from graft.evaluate.calibration import calibration, top_label_calibration
from graft.evaluate.confident_errors import most_confident_errors
from graft.evaluate.gate import decide
from graft.evaluate.metrics import classification_report, majority_baseline
from graft.evaluate.plots import plot_confusion
from graft.evaluate.stakeholder import stakeholder_view, threshold_sweep
from graft.evaluate.summary import summarize, write_summary

CHROMIUM = Path("/usr/bin/chromium")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# the seed's fraud example: rows = true (valid, fraud), columns = predicted (valid, fraud)
FRAUD_CONFUSION = [[7800, 200], [14, 266]]


# ----------------------------------------------------------------------------- calibration


def test_ece_matches_hand_computed_value() -> None:
    confidences = np.array([0.95, 0.95, 0.75, 0.55, 0.55])
    correct = np.array([True, False, True, True, False])
    result = calibration(confidences, correct, n_bins=10)
    # (0.9,1]: 2/5*|0.5-0.95|=0.18; (0.7,0.8]: 1/5*|1-0.75|=0.05; (0.5,0.6]: 2/5*|0.5-0.55|=0.02
    assert result.ece == pytest.approx(0.25)
    assert [b.count for b in result.bins] == [0, 0, 0, 0, 0, 2, 0, 1, 0, 2]
    assert result.bins[9].accuracy == pytest.approx(0.5)
    assert result.bins[9].mean_confidence == pytest.approx(0.95)


def test_ece_bins_are_closed_on_the_right_and_zero_when_calibrated() -> None:
    edge = calibration(np.array([0.3, 0.0, 1.0]), np.array([True, False, True]), n_bins=10)
    assert [b.count for b in edge.bins] == [1, 0, 1, 0, 0, 0, 0, 0, 0, 1]
    # 80%-confident predictions that are right 8 times in 10: perfectly calibrated
    calibrated = calibration(np.full(10, 0.8), np.arange(10) < 8, n_bins=5)
    assert calibrated.ece == pytest.approx(0.0)
    # one bin: ECE = |mean accuracy - mean confidence|
    one = calibration(np.array([0.9, 0.7]), np.array([True, False]), n_bins=1)
    assert one.ece == pytest.approx(abs(0.5 - 0.8))


def test_top_label_calibration_uses_the_predicted_class() -> None:
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    result = top_label_calibration(np.array([0, 0, 0]), probabilities, n_bins=10)
    # confidences 0.9 (right), 0.8 (wrong), 0.6 (right)
    assert result.ece == pytest.approx((0.1 + 0.8 + 0.4) / 3)


# ----------------------------------------------------------------------------- stakeholder view


def test_fraud_fixture_rates_and_daily_sentence() -> None:
    view = stakeholder_view(FRAUD_CONFUSION, ["valid", "fraud"], daily_volume=8280)
    assert view.false_negative_rate == pytest.approx(0.05)
    assert view.false_positive_rate == pytest.approx(0.025)
    assert view.prevalence == pytest.approx(280 / 8280)
    assert view.prevalence_source == "test split"
    assert "misses 5.0% of real fraud cases" in view.summary
    assert "flags 2.5% of valid cases" in view.summary
    assert view.daily_sentence == "200 valid flagged a day, 14 missed, 266 caught"
    assert view.daily is not None
    assert (view.daily.caught, view.daily.missed, view.daily.flagged_negatives) == (266, 14, 200)
    assert view.daily.cleared == 7800
    assert view.precision_at_prevalence == pytest.approx(266 / 466)
    # the same prevalence given explicitly gives the same counts
    explicit = stakeholder_view(FRAUD_CONFUSION, ["valid", "fraud"], 8280, prevalence=280 / 8280)
    assert explicit.daily_sentence == view.daily_sentence
    assert explicit.prevalence_source == "config"


def test_daily_counts_follow_configured_volume_and_prevalence() -> None:
    view = stakeholder_view(
        FRAUD_CONFUSION, ["valid", "fraud"], daily_volume=10_000, prevalence=0.02
    )
    assert view.daily_sentence == "245 valid flagged a day, 10 missed, 190 caught"
    without_volume = stakeholder_view(FRAUD_CONFUSION, ["valid", "fraud"])
    assert without_volume.daily is None and without_volume.daily_sentence is None


def test_threshold_sweep_recall_never_rises_with_the_threshold() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    scores = np.clip(0.35 * y + rng.uniform(0.0, 0.65, 500), 0.0, 1.0)
    rows = threshold_sweep(y, scores, [0.9, 0.0, 0.5, 0.3, 0.7, 1.0])
    assert [r.threshold for r in rows] == [0.0, 0.3, 0.5, 0.7, 0.9, 1.0]
    recalls = [r.recall for r in rows]
    fprs = [r.false_positive_rate for r in rows]
    assert all(a >= b for a, b in pairwise(recalls))
    assert all(a >= b for a, b in pairwise(fprs))
    assert recalls[0] == 1.0 and recalls[0] > recalls[-2]
    for row in rows:
        assert row.false_negative_rate == pytest.approx(1 - row.recall)
        assert row.true_positive + row.false_negative == int(y.sum())
    middle = rows[2]
    flagged = scores >= 0.5
    assert middle.precision == pytest.approx((flagged & (y == 1)).sum() / flagged.sum())


def test_most_confident_errors_come_first() -> None:
    y = np.array([0, 1, 2, 0, 1, 2])
    probabilities = np.array(
        [
            [0.9, 0.05, 0.05],  # right
            [0.7, 0.2, 0.1],  # wrong, 0.7
            [0.05, 0.9, 0.05],  # wrong, 0.9
            [0.1, 0.5, 0.4],  # wrong, 0.5
            [0.1, 0.8, 0.1],  # right
            [0.7, 0.2, 0.1],  # wrong, 0.7 (tie: row order kept)
        ]
    )
    errors = most_confident_errors(y, probabilities, limit=3)
    assert [e.index for e in errors] == [2, 1, 5]
    assert [(e.true, e.predicted) for e in errors] == [(2, 1), (1, 0), (2, 0)]
    assert [e.confidence for e in errors] == pytest.approx([0.9, 0.7, 0.7])
    assert len(most_confident_errors(y, probabilities, limit=10)) == 4
    assert most_confident_errors(y, probabilities, limit=0) == []


# ----------------------------------------------------------------------------- baselines


def test_linear_baseline_beats_majority_on_separable_data() -> None:
    rng = np.random.default_rng(1)

    def blobs(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = (rng.uniform(size=n) < 0.3).astype(np.int64)  # 70% majority class
        x = rng.normal(size=(n, 4, 4)) + 3.0 * y[:, None, None]
        return x.astype(np.float32), y

    x_train, y_train = blobs(400)
    x_test, y_test = blobs(300)
    _, majority = majority_baseline(y_train, y_test)
    linear = linear_baseline(x_train, y_train, x_test, y_test, max_iter=50, max_rows=200, seed=0)
    assert majority < 0.8
    assert linear > 0.97
    assert linear > majority + 0.15


# ----------------------------------------------------------------------------- report


def _binary_predictions(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    y = (rng.uniform(size=n) < 0.3).astype(np.int64)
    score = np.clip(0.55 * y + rng.uniform(0.0, 0.45, n) + rng.normal(0, 0.1, n), 0.01, 0.99)
    return y, np.stack([1 - score, score], axis=1)


def _write_binary_report(out: Path) -> tuple[Path, dict[str, float]]:
    y, probabilities = _binary_predictions(np.random.default_rng(2), 400)
    names = ["valid", "fraud"]
    config = EvaluateConfig(daily_volume=8280, confident_errors=5)
    report = classification_report(y, probabilities, 2)
    decision = decide(config, report.accuracy, 0.7, None)
    summary = summarize(config, y, probabilities, names, report)
    metrics = {
        "test_accuracy": report.accuracy,
        "test_loss": report.loss,
        "baseline_accuracy": 0.7,
        "linear_baseline_accuracy": 0.8,
        "train_accuracy_eval": 0.95,
        **summary.metrics,
    }
    plot_confusion(report.confusion, names, out / "confusion_matrix.png")
    return write_summary(summary, metrics, decision, out), metrics


def test_summary_files_for_binary_and_multiclass(tmp_path: Path) -> None:
    page, metrics = _write_binary_report(tmp_path)
    assert {"test_ece", "test_false_negative_rate", "test_false_positive_rate"} <= set(metrics)
    for name in [
        "report.html",
        "reliability_diagram.png",
        "calibration.json",
        "confident_errors.json",
        "stakeholder.json",
        "threshold_sweep.csv",
    ]:
        assert (tmp_path / name).stat().st_size > 0, name
    header = (tmp_path / "threshold_sweep.csv").read_text().splitlines()[0]
    assert header.startswith("threshold,precision,recall,false_positive_rate,false_negative_rate")
    assert page.read_text().count("<img ") == 2

    multi = tmp_path / "multi"
    multi.mkdir()
    y = np.array([0, 1, 2, 2])
    probabilities = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.6, 0.2, 0.2], [0.1, 0.1, 0.8]])
    report = classification_report(y, probabilities, 3)
    summary = summarize(EvaluateConfig(), y, probabilities, ["a", "b", "c"], report)
    assert summary.stakeholder is None and set(summary.metrics) == {"test_ece"}
    write_summary(
        summary,
        {"test_accuracy": report.accuracy},
        decide(EvaluateConfig(), 0.75, 0.5, None),
        multi,
    )
    assert not (multi / "stakeholder.json").exists()
    assert "id='threshold-sweep'" not in (multi / "report.html").read_text()


def _chromium(page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    command = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--window-size=1200,1600",
        *args,
        page.resolve().as_uri(),
    ]
    return subprocess.run(command, capture_output=True, timeout=180, check=True)


@pytest.mark.skipif(
    not CHROMIUM.exists() or shutil.which("chromium") is None,
    reason="headless Chromium not installed (/usr/bin/chromium): `apt-get install -y chromium`",
)
def test_html_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    out = tmp_path / "evaluation"
    out.mkdir()
    page, metrics = _write_binary_report(out)

    # every embedded image is a PNG that decodes
    payloads = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page.read_text())
    assert len(payloads) == 2
    for payload in payloads:
        data = base64.b64decode(payload, validate=True)
        assert data.startswith(PNG_SIGNATURE)
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
        with Image.open(io.BytesIO(data)) as image:
            assert image.width > 100 and image.height > 100

    dom = _chromium(page, tmp_path / "profile-dom", "--dump-dom").stdout.decode()
    assert '<table id="metrics">' in dom
    metric_rows = re.search(r'<table id="metrics">.*?</table>', dom, re.S)
    assert metric_rows is not None
    for key in metrics:
        assert f"<td>{key}</td>" in metric_rows.group(0)
    assert f"{metrics['test_accuracy']:.4f}" in metric_rows.group(0)
    for table in ["per-class", "baselines", "error-rates", "threshold-sweep", "confident-errors"]:
        assert f'<table id="{table}">' in dom, table
    assert dom.count("<img ") == 2
    assert 'id="gate"' in dom and "beats the majority baseline" in dom
    assert "valid flagged a day" in dom

    shot = tmp_path / "report.png"
    _chromium(page, tmp_path / "profile-shot", f"--screenshot={shot}")
    assert shot.read_bytes().startswith(PNG_SIGNATURE)
    with Image.open(shot) as image:
        assert image.size == (1200, 1600)
        gray = np.asarray(image.convert("L"))
    inked = (gray < 200).mean()
    assert 0.005 < inked < 0.9, f"screenshot looks blank or solid: {inked:.4f} of pixels inked"
    assert gray.std() > 10
