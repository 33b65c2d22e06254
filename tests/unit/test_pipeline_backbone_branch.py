"""The pipeline's backbone branch under KFP's local runner (the real pipeline): with an
external backbone (model.family graft or hf) import-backbone runs in pretrain's place, and
pretrain never starts.

The registered model named here does not exist, so import-backbone fails with its one-line
error after data-prep: no Ray, no training, about 20 s on 2 cores. The branch that succeeds
(a Hugging Face ResNet through finetune to export) is `tests/e2e/test_hf_backbone.py`."""

from __future__ import annotations

from collections.abc import Iterator

import mlflow
import pytest
from local_tracking import tiny_config_tracked_in
from test_pipeline_exit_handler import Outcomes

from graft.config import FINALIZE_TASK
from graft.errors import PipelineStageError
from graft.kfp.local_run import run_local
from pipeline_runs import pipeline_runs


@pytest.fixture
def _local_runner_reset() -> Iterator[None]:
    from kfp import local

    yield
    local.config.LocalExecutionConfig.instance = None


@pytest.mark.usefixtures("_local_runner_reset")
def test_an_external_backbone_takes_the_import_branch_and_skips_pretrain(tmp_path) -> None:
    config = tiny_config_tracked_in(
        tmp_path, "model.family=graft", "model.pretrained=models:/no-such-model@champion"
    )
    outcomes = Outcomes()

    with pytest.raises(PipelineStageError) as failed:
        run_local(config, listener=outcomes)

    assert str(failed.value).startswith("stage 'import-backbone' failed: ")
    assert "no-such-model" in str(failed.value)
    assert outcomes.seen == [
        ("open-run", "done"),
        ("monitor", "done"),
        ("data-prep", "done"),
        ("import-backbone", "failed"),
        (FINALIZE_TASK, "done"),
    ]
    runs = pipeline_runs(mlflow.MlflowClient(config.resolved_tracking_uri()), "unit")
    assert set(runs.stages) == {"monitor", "data-prep", "import-backbone"}
    assert runs.stages["import-backbone"].info.status == "FAILED"
    assert runs.parent.info.status == "FAILED"
