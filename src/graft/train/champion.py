"""The registered champion as Graft loads it: its weights and spec, never its pickle.

Next to the registered MLflow model, export logs the served network's model folder
(``model.pt``, tensors only, and ``spec.json``) and data-prep's NaN fill, in the version's
run under :data:`WEIGHTS_FOLDER`. Evaluate and the warm start read those with
``torch.load(weights_only=True)``: whoever can write to the registry or its artifact store
cannot run code in them through a crafted pickle.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from graft.config import GraftConfig
from graft.data.preprocessing import MissingValueFill
from graft.data.raw_input_model import with_missing_fill
from graft.errors import GraftError, RegistryError
from graft.io import registry
from graft.nn.models import GraftNet, ModelSpec
from graft.train.model_dir import load_checkpoint_model, save_model_dir

WEIGHTS_FOLDER = "weights"
FILL_FILE = "missing_fill.json"


@dataclass(frozen=True)
class Champion:
    version: str
    network: GraftNet
    fill: MissingValueFill | None
    spec: ModelSpec

    def served(self) -> nn.Module:
        """The network taking raw rows, as the registered model does."""
        return with_missing_fill(self.network, self.fill)


def write_champion_files(
    network: GraftNet, spec: ModelSpec, fill: MissingValueFill | None, folder: Path
) -> Path:
    """What export logs under :data:`WEIGHTS_FOLDER` for :func:`load_champion` to read."""
    save_model_dir(network, spec, folder)
    if fill is not None:
        (folder / FILL_FILE).write_text(json.dumps(dataclasses.asdict(fill)))
    return folder


def load_champion(config: GraftConfig) -> Champion | None:
    """``models:/<export.model_name>@champion`` from its weights; None without a champion.

    Raises RegistryError when its files are missing (a version an older Graft registered) or
    are not plain tensors and values."""
    version = registry.champion_version(config)
    if version is None:
        return None
    uri = f"models:/{config.export.model_name}/{version.version}"
    with tempfile.TemporaryDirectory(prefix="graft-champion-") as scratch:
        folder = registry.download_version_files(config, version, WEIGHTS_FOLDER, Path(scratch))
        try:
            network, spec = load_checkpoint_model(folder)
            fill = _read_fill(folder / FILL_FILE)
        except (GraftError, OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
            raise RegistryError(
                f"the champion {uri} cannot be loaded: {str(exc).splitlines()[0]}. Move the "
                "'champion' alias to a version this Graft registered, or delete it "
                f"(MlflowClient().delete_registered_model_alias('{config.export.model_name}', "
                "'champion'))"
            ) from None
    return Champion(str(version.version), network, fill, spec)


def architecture_difference(champion: Champion, config: GraftConfig) -> str:
    """What keeps ``config`` from warm-starting from ``champion`` without a pretrain: the
    model-block keys whose values differ (dropout aside: it has no weights); "" if none."""
    theirs = {k: v for k, v in champion.spec.model.items() if k != "dropout"}
    ours = {k: v for k, v in config.model.model_dump(mode="json").items() if k != "dropout"}
    differing = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
    return ", ".join(f"model.{k}" for k in differing)


def _read_fill(path: Path) -> MissingValueFill | None:
    return MissingValueFill(**json.loads(path.read_text())) if path.is_file() else None
