"""MC-dropout evaluation: numbers from the stochastic passes, BN untouched, files and report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from graft.config import EvaluateConfig
from graft.evaluate.gate import decide
from graft.evaluate.metrics import classification_report
from graft.evaluate.summary import summarize, write_summary
from graft.evaluate.uncertainty import mc_dropout_evaluation
from graft.nn.mc_dropout import mc_predict

N, FEATURES, CLASSES = 200, 12, 3


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = rng.integers(0, CLASSES, N)
    x = rng.normal(size=(N, FEATURES)).astype(np.float32)
    x[:, :CLASSES] += 2.0 * np.eye(CLASSES, dtype=np.float32)[y]
    return x, y


def _model(dropout: float = 0.5) -> nn.Sequential:
    """BN + dropout classifier fitted a little, so its BN running stats are not the defaults."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(FEATURES, 32),
        nn.BatchNorm1d(32),
        nn.ReLU(),
        nn.Dropout(dropout) if dropout > 0 else nn.Identity(),
        nn.Linear(32, CLASSES),
    )
    x, y = _data()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(30):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y)).backward()
        optimizer.step()
    return model.eval()


def _buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.named_buffers()}


def test_mc_numbers_are_those_of_the_seeded_passes_and_bn_is_untouched() -> None:
    model = _model()
    model.train()  # a caller's mode must survive the evaluation
    before = _buffers(model)
    x, y = _data()
    torch.manual_seed(123)
    global_rng = torch.get_rng_state()

    result = mc_dropout_evaluation(model, x, y, samples=50, seed=7, latency_sample_counts=[1, 10])

    for key, value in _buffers(model).items():
        assert torch.equal(value, before[key]), key  # running stats and num_batches_tracked
    assert all(m.training for m in model.modules())
    assert torch.equal(torch.get_rng_state(), global_rng)  # the draws used a forked RNG

    torch.manual_seed(7)
    mean, std = mc_predict(model, torch.from_numpy(x), 50)
    predicted = mean.argmax(1).numpy()
    assert result.accuracy == float((predicted == y).mean())
    expected_std = std.numpy()[np.arange(N), predicted].astype(np.float64)
    assert result.mean_std == pytest.approx(expected_std.mean(), rel=1e-6)
    correct = predicted == y
    assert result.mean_std_correct == pytest.approx(expected_std[correct].mean(), rel=1e-6)
    assert result.mean_std_wrong == pytest.approx(expected_std[~correct].mean(), rel=1e-6)
    true_p = mean.numpy()[np.arange(N), y].astype(np.float64)
    assert result.loss == pytest.approx(-np.log(true_p).mean(), rel=1e-6)
    assert result.mean_std > 0.01  # dropout 0.5 makes the passes disagree
    assert result.accuracy > 0.8
    assert result.dropout_layers == 1 and result.samples == 50 and result.seed == 7

    assert [row.samples for row in result.by_sample_count] == [1, 10, 50]
    assert all(row.latency_ms > 0 for row in result.by_sample_count)
    row_1 = result.by_sample_count[0]
    assert row_1.latency_ms_per_example == pytest.approx(row_1.latency_ms / N)
    assert result.by_sample_count[-1].accuracy == result.accuracy
    assert set(result.metrics) == {
        "mc_dropout_accuracy",
        "mc_dropout_loss",
        "mc_dropout_mean_std",
        "mc_dropout_mean_std_correct",
        "mc_dropout_mean_std_wrong",
        "mc_dropout_latency_ms_1",
        "mc_dropout_latency_ms_10",
        "mc_dropout_latency_ms_50",
    }


def test_same_seed_same_numbers_and_counts_above_samples_are_dropped() -> None:
    model, (x, y) = _model(), _data()
    a = mc_dropout_evaluation(model, x, y, samples=20, seed=3, latency_sample_counts=[1, 100])
    b = mc_dropout_evaluation(model, x, y, samples=20, seed=3, latency_sample_counts=[1, 100])
    assert (a.accuracy, a.mean_std, a.loss) == (b.accuracy, b.mean_std, b.loss)
    assert [row.samples for row in a.by_sample_count] == [1, 20]


def test_without_dropout_mc_equals_the_deterministic_prediction() -> None:
    model, (x, y) = _model(dropout=0.0), _data()
    result = mc_dropout_evaluation(model, x, y, samples=5, seed=0)
    with torch.no_grad():
        deterministic = model.eval()(torch.from_numpy(x)).argmax(1).numpy()
    assert result.dropout_layers == 0
    assert result.mean_std == 0.0
    assert result.accuracy == float((deterministic == y).mean())


def test_mc_section_reaches_metrics_json_file_and_html(tmp_path: Path) -> None:
    model, (x, y) = _model(), _data()
    with torch.no_grad():
        probabilities = torch.softmax(model.eval()(torch.from_numpy(x)), 1).numpy()
    report = classification_report(y, probabilities, CLASSES)
    config = EvaluateConfig.model_validate({"mc_dropout": {"enabled": True, "samples": 20}})
    assert EvaluateConfig().mc_dropout.enabled is False
    assert EvaluateConfig().mc_dropout.samples == 100
    summary = summarize(config, y, probabilities, ["a", "b", "c"], report)
    summary.mc_dropout = mc_dropout_evaluation(model, x, y, 20, 0, [1, 10])
    metrics = {"test_accuracy": report.accuracy, **summary.metrics}
    assert metrics["mc_dropout_accuracy"] == summary.mc_dropout.accuracy
    page = write_summary(summary, metrics, decide(config, report.accuracy, 0.3, None), tmp_path)
    saved = json.loads((tmp_path / "mc_dropout.json").read_text())
    assert saved["samples"] == 20 and saved["accuracy"] == summary.mc_dropout.accuracy
    assert [row["samples"] for row in saved["by_sample_count"]] == [1, 10, 20]
    html = page.read_text()
    assert "id='mc-dropout-latency'" in html and "id='mc-dropout-summary'" in html
    table = html.split("id='mc-dropout-latency'")[1].split("</table>")[0]
    assert table.count("<tr>") == 4  # header + one row per sample count
