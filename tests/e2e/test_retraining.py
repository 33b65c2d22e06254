"""The retraining loop: two pipeline runs back to back through the KFP local runner on the tiny
preset. Run 1 becomes the champion; run 2 warm-starts from it, is held to an impossible
margin, and the gate keeps the champion where it was for that stated reason."""

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from graft.config import load_config
from graft.kfp.local_run import run_local

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1500)]

MODEL_NAME = "graft-retrain"


def test_second_run_warm_starts_and_the_gate_keeps_the_champion(tmp_path: Path) -> None:
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    common = [
        f"tracking.tracking_uri={tracking_uri}",
        "tracking.experiment_name=retrain",
        f"export.model_name={MODEL_NAME}",
    ]
    first = run_local(
        load_config(preset="tiny", overrides=[f"work_dir={tmp_path / 'run1'}", *common])
    )
    assert first["gate_passed"] is True
    assert sorted(first["aliases"]) == ["challenger", "champion"]

    second = run_local(
        load_config(
            preset="tiny",
            overrides=[
                f"work_dir={tmp_path / 'run2'}",
                *common,
                "finetune.warm_start_from_champion=true",
                "evaluate.champion_margin=1.0",
            ],
        )
    )
    assert second["gate_passed"] is False
    assert second["aliases"] == ["challenger"]

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    champion = client.get_model_version_by_alias(MODEL_NAME, "champion")
    challenger = client.get_model_version_by_alias(MODEL_NAME, "challenger")
    assert str(champion.version) == str(first["model_version"]) == "1"
    assert str(challenger.version) == str(second["model_version"]) == "2"

    # the refusal names the champion, in the registry and in the model card
    reasons = client.get_model_version(MODEL_NAME, "2").tags["gate_reasons"]
    assert "does not beat the champion" in reasons
    card = json.loads((Path(second["export_dir"]) / "model_card.json").read_text())
    assert any("champion" in reason for reason in card["gate"]["reasons"])
    assert card["gate"]["passed"] is False

    # run 2's finetune started from the champion's weights, run 1's from the backbone
    experiment = client.get_experiment_by_name("retrain")
    finetunes = client.search_runs(
        [experiment.experiment_id], filter_string="tags.`graft.stage` = 'transfer-finetune'"
    )
    assert len(finetunes) == 2
    inits = sorted(run.data.tags.get("graft.init", "none") for run in finetunes)
    assert inits == ["champion:1", "none"]

    # the test-split ledger: run 2's warm-started model has other weights, so its evaluation
    # is a first look at the test split, not a refused repeat
    evaluations = client.search_runs(
        [experiment.experiment_id], filter_string="tags.`graft.stage` = 'evaluate'"
    )
    assert len(evaluations) == 2
    assert len({run.data.tags["graft.test_evaluated_model"] for run in evaluations}) == 2
    assert all(run.data.tags["graft.test_repeat"] == "false" for run in evaluations)
