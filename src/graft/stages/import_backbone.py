"""The import-backbone stage: the pipeline's branch that replaces pretrain when the backbone
comes from outside (``model.family`` hf or graft, from ``model.pretrained``), or when the
retraining loop warm-starts from the registered champion
(``finetune.warm_start_from_champion``; :mod:`graft.stages.open_run` picks the branch).

It writes the same model folder pretrain would (``model.pt`` and ``spec.json``), so
transfer-finetune, tune and evaluate take either without knowing which branch ran.
"""

from __future__ import annotations

from pathlib import Path

from graft.config import GraftConfig
from graft.errors import ConfigError
from graft.io import tracking
from graft.nn.models import count_parameters
from graft.stages.outputs import ImportOutput
from graft.train.backbone_import import import_backbone, import_champion
from graft.train.model_dir import load_checkpoint_model


def run(config: GraftConfig, dataset_dir: str, output_dir: str, parent_run_id: str) -> ImportOutput:
    external = config.backbone_source == "import"
    if not external and not config.finetune.warm_start_from_champion:
        raise ConfigError(
            f"import-backbone runs for model.family hf or graft (model.pretrained), or to warm "
            f"start from the champion; this config's model.family is {config.model.family}, "
            "which pretrain trains"
        )
    source = _pretrained(config) if external else f"models:/{config.export.model_name}@champion"
    with tracking.stage_run(config, parent_run_id, "import-backbone") as run_id:
        logger = tracking.logger_for(config, run_id)
        logger.params({"model.family": config.model.family, "model.pretrained": source})
        output = Path(output_dir)
        if external:
            model_dir = import_backbone(config, dataset_dir, output)
        else:
            model_dir = import_champion(config, dataset_dir, output)
        network, _ = load_checkpoint_model(model_dir)
        blocks = len(network.backbone)
        parameters = count_parameters(network)["trainable"]
        logger.metrics({"backbone_blocks": float(blocks), "parameters": float(parameters)}, step=0)
        logger.tags({"graft.backbone": source})
    return ImportOutput(str(model_dir), run_id, source, blocks)


def _pretrained(config: GraftConfig) -> str:
    return config.model.pretrained or ""
