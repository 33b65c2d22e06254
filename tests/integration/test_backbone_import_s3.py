"""model.family=hf from an s3:// prefix: the save_pretrained folder is downloaded from a real,
authenticating S3 server, then imported as from a local folder."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest

from graft.config import load_config
from graft.errors import StorageError
from graft.io import storage
from graft.train.backbone_import import import_backbone
from graft.train.model_dir import load_checkpoint_model
from hf_models import saved_hf_model

pytestmark = pytest.mark.timeout(180)


def test_an_hf_backbone_is_imported_from_an_s3_prefix(
    s3_env: str, tiny_dataset_and_source: tuple[str, str], tmp_path: Path
) -> None:
    dataset, _ = tiny_dataset_and_source
    hf, folder = saved_hf_model("convnext", tmp_path / "convnext")
    boto3.client("s3", endpoint_url=s3_env).create_bucket(Bucket="graft-backbones")
    storage.upload_tree(folder, "s3://graft-backbones/convnext-tiny")
    config = load_config(
        preset="tiny",
        overrides=[
            f"work_dir={tmp_path}",
            "model.family=hf",
            "model.pretrained=s3://graft-backbones/convnext-tiny/",
        ],
    )
    model_dir = import_backbone(config, dataset, tmp_path / "imported")
    network, spec = load_checkpoint_model(model_dir)
    assert spec.hf_config is not None and spec.hf_config["model_type"] == "convnext"
    # every weight of the HF model reached the backbone unchanged
    ours = sorted(t.sum().item() for t in network.backbone.state_dict().values())
    assert ours == sorted(t.sum().item() for t in hf.state_dict().values())

    missing = config.model_copy(
        update={"model": config.model.model_copy(update={"pretrained": "s3://graft-backbones/x"})}
    )
    with pytest.raises(StorageError, match="holds no files"):
        import_backbone(missing, dataset, tmp_path / "missing")
