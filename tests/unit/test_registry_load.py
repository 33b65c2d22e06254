"""A registered model that this Graft cannot unpickle fails with the way out, not a bare
AttributeError: its pickle names a class that has moved since it was registered."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from local_tracking import tiny_config_tracked_in
from mlflow.tracking import MlflowClient

from graft.errors import RegistryError
from graft.io import tracking

MODULE = "graft_unit_vanishing_net"


def test_a_champion_whose_class_has_moved_fails_with_the_alias_to_delete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tiny_config_tracked_in(tmp_path, "export.model_name=graft-vanishing")
    source = tmp_path / "src"
    source.mkdir()
    (source / f"{MODULE}.py").write_text(
        "import torch\n\nclass VanishingNet(torch.nn.Linear):\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(source))
    module = __import__(MODULE)
    model = module.VanishingNet(3, 2)
    example = np.zeros((1, 3), dtype=np.float32)
    run_id = tracking.start_pipeline_run(config, "registry-load")
    outputs = model(torch.from_numpy(example)).detach().numpy()
    version = tracking.register_model(config, run_id, model, example, outputs, [])
    tracking.set_alias(config, "champion", version)
    assert isinstance(tracking.load_registered_model(config, "champion"), torch.nn.Linear)

    # the class moves away, as graft.export.raw_inputs.RawInputModel did
    monkeypatch.delitem(sys.modules, MODULE)
    (source / f"{MODULE}.py").unlink()
    with pytest.raises(RegistryError) as caught:
        tracking.load_registered_model(config, "champion")
    message = str(caught.value)
    assert "models:/graft-vanishing@champion cannot be loaded" in message
    assert "delete_registered_model_alias('graft-vanishing', 'champion')" in message
    # nothing was touched: the alias still names the version, for the user to decide
    client = MlflowClient(config.resolved_tracking_uri(), config.resolved_tracking_uri())
    assert str(client.get_model_version_by_alias("graft-vanishing", "champion").version) == version
