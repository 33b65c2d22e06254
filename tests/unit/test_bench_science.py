"""bench/training_science.py stays runnable: a quick optimizers run yields a full table."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "training_science.py"


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("training_science", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


@pytest.mark.timeout(120)
def test_quick_optimizers_run_prints_one_row_per_optimizer_and_a_computed_claim(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bench = _bench()
    out = tmp_path / "science.json"
    report = bench.main(
        ["--quick", "--groups", "optimizers", "--json", str(out), "--work-dir", str(tmp_path)]
    )

    assert json.loads(out.read_text()) == report
    assert report["settings"]["seeds"] == bench.QUICK["seeds"] == 2
    arms = report["groups"]["optimizers"]
    assert [arm["name"] for arm in arms] == list(bench.OPTIMIZERS)
    for arm in arms:
        assert len(arm["test_accuracy"]) == 2  # one figure per seed
        assert all(0.0 <= acc <= 1.0 for acc in arm["test_accuracy"])
        assert all(0.0 <= acc <= 1.0 for acc in arm["first_epoch_val_accuracy"])
        assert all(seconds > 0 for seconds in arm["seconds"])
    by_name = {arm["name"]: arm for arm in arms}
    # trained, not just evaluated: Adam clearly learns the 8 classes within 2 quick epochs
    assert min(by_name["adam"]["test_accuracy"]) > 0.5
    # seeds differ (each re-draws the data and the initial weights)
    assert len(set(by_name["adam"]["test_accuracy"])) == 2

    printed = capsys.readouterr().out
    for name in bench.OPTIMIZERS:
        assert f"│ {name} " in printed
    assert "2 seeds" in printed
    [claim] = report["claims"]
    assert claim.startswith("book claim: momentum and NAG beat plain SGD")
    assert ("-> reproduced" in claim) or ("-> NOT reproduced" in claim)
    assert claim in printed.replace("\n", "")


def test_clearly_beats_needs_a_gain_above_twice_its_standard_error() -> None:
    bench = _bench()
    assert bench.clearly_beats([0.9, 0.91, 0.92], [0.8, 0.8, 0.81])
    assert not bench.clearly_beats([0.9, 0.7, 0.92], [0.8, 0.8, 0.81])  # one seed reverses
    assert not bench.clearly_beats([0.9], [0.8])  # one seed: no spread
