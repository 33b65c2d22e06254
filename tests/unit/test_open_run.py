"""open-run: the data's digest (data-prep's and pretrain's cache key), the parent run the
cacheable stages find by it, and the branch after data-prep, the warm start's champion
included (its pretrain skipped)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from local_tracking import tiny_config_tracked_in
from mlflow.tracking import MlflowClient

from graft import stages
from graft.config import DataConfig, GraftConfig, load_config
from graft.data.fingerprint import source_digest
from graft.errors import DatasetError
from graft.io import tracking
from graft.train.champion import WEIGHTS_FOLDER
from graft.train.model_dir import load_checkpoint_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _npz(path: Path, rows: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    np.savez(path, x=rng.normal(size=(rows, 4)), y=rng.integers(0, 2, rows))
    return path


def test_the_digest_names_the_bytes_not_the_path_or_the_clock(tmp_path: Path) -> None:
    data = _npz(tmp_path / "week1.npz", 50)
    first = source_digest(DataConfig(source=str(data)))
    assert source_digest(DataConfig(source=str(data))) == first
    data.touch()  # a new modification time, the same bytes
    assert source_digest(DataConfig(source=str(data))) == first
    _npz(data, 51)  # one more row
    assert source_digest(DataConfig(source=str(data))) != first


def test_a_folders_digest_changes_with_any_file_added_renamed_or_rewritten(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "images"
    (folder / "cat").mkdir(parents=True)
    (folder / "cat" / "a.png").write_bytes(b"\x89PNG one")
    digests = [source_digest(DataConfig(source=str(folder)))]
    (folder / "cat" / "b.png").write_bytes(b"\x89PNG two")
    digests.append(source_digest(DataConfig(source=str(folder))))
    (folder / "cat" / "b.png").rename(folder / "cat" / "c.png")
    digests.append(source_digest(DataConfig(source=str(folder))))
    (folder / "cat" / "c.png").write_bytes(b"\x89PNG three")
    digests.append(source_digest(DataConfig(source=str(folder))))
    assert len(set(digests)) == 4
    assert source_digest(DataConfig(source="builtin:digits")) == source_digest(
        DataConfig(source="builtin:digits")
    )


def test_a_missing_source_names_the_path() -> None:
    with pytest.raises(DatasetError, match="/no/such/data does not exist"):
        source_digest(DataConfig(source="/no/such/data"))


def test_open_run_tags_the_parent_that_the_cacheable_stages_then_find(tmp_path: Path) -> None:
    config = tiny_config_tracked_in(tmp_path)
    opened = stages.open_run.run(config, kfp_run_id="kfp-7")
    assert opened.backbone_branch == "pretrain"
    parent = MlflowClient(config.resolved_tracking_uri()).get_run(opened.parent_run_id)
    assert parent.data.tags[tracking.DATA_DIGEST_TAG] == opened.data_digest
    assert parent.data.tags[tracking.KFP_RUN_ID_TAG] == "kfp-7"
    assert stages.open_run.parent_run_for(config, opened.data_digest) == opened.parent_run_id
    # another config (one more epoch) is another cache entry, and another parent
    other = config.model_copy(update={"pretrain": config.pretrain.model_copy(update={"epochs": 9})})
    assert stages.open_run.parent_run_for(other, opened.data_digest) != opened.parent_run_id


@pytest.fixture
def champion(
    tiny_dataset_and_source: tuple[str, str],
    tmp_path: Path,
    untrained_model_dir: Callable[..., Path],
) -> dict[str, Any]:
    """The tiny preset's model registered as export registers it (its weights/ files), with
    the alias 'champion', under the config's export.model_name."""
    dataset, _ = tiny_dataset_and_source
    config = tiny_config_tracked_in(tmp_path, "finetune.warm_start_from_champion=true")
    folder = untrained_model_dir(config, dataset, tmp_path / "weights", "target", seed=5)
    uri = config.resolved_tracking_uri()
    client = MlflowClient(uri, registry_uri=uri)
    experiment = client.create_experiment("export", artifact_location=str(tmp_path / "art"))
    run_id = client.create_run(experiment).info.run_id
    client.log_artifacts(run_id, str(folder), WEIGHTS_FOLDER)
    name = config.export.model_name
    client.create_registered_model(name)
    version = client.create_model_version(name, f"runs:/{run_id}/model", run_id=run_id)
    client.set_registered_model_alias(name, "champion", version.version)
    return {"config": config, "dataset": dataset, "folder": folder}


def _with(config: GraftConfig, *overrides: str) -> GraftConfig:
    return load_config(preset="tiny", overrides=[*_overrides_of(config), *overrides])


def _overrides_of(config: GraftConfig) -> list[str]:
    return [
        f"work_dir={config.work_dir}",
        f"tracking.tracking_uri={config.tracking.tracking_uri}",
        f"tracking.experiment_name={config.tracking.experiment_name}",
    ]


def test_a_warm_start_from_a_champion_of_the_same_architecture_skips_pretrain(
    champion: dict[str, Any], tmp_path: Path
) -> None:
    config = champion["config"]
    assert stages.open_run.backbone_branch(config) == "champion"
    # what keeps it from skipping: no warm start, or another architecture (dropout aside)
    assert stages.open_run.backbone_branch(_with(config)) == "pretrain"
    warm = "finetune.warm_start_from_champion=true"
    assert stages.open_run.backbone_branch(_with(config, warm, "model.dropout.rate=0.3")) == (
        "champion"
    )
    assert stages.open_run.backbone_branch(_with(config, warm, "model.hidden_sizes=[7]")) == (
        "pretrain"
    )

    # import-backbone, on the champion branch, hands finetune the champion's own weights
    parent = tracking.start_pipeline_run(config, "warm")
    out = stages.import_backbone.run(config, champion["dataset"], str(tmp_path / "m"), parent)
    assert out.source == f"models:/{config.export.model_name}@champion"
    imported, _ = load_checkpoint_model(out.model_dir)
    registered, _ = load_checkpoint_model(champion["folder"])
    assert all(
        torch.equal(tensor, registered.state_dict()[key])
        for key, tensor in imported.state_dict().items()
    )


def test_without_a_champion_the_warm_start_pretrains(tmp_path: Path) -> None:
    config = tiny_config_tracked_in(tmp_path, "finetune.warm_start_from_champion=true")
    assert stages.open_run.backbone_branch(config) == "pretrain"
    external = tiny_config_tracked_in(
        tmp_path, "model.family=graft", "model.pretrained=models:/elsewhere@champion"
    )
    assert stages.open_run.backbone_branch(external) == "import"
