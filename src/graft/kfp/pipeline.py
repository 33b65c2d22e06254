"""The training DAG: data-prep -> pretrain -> transfer-finetune -> tune -> evaluate -> export.

Only evaluate and export read the test split's artifact (through ``dataset``): the earlier
stages read only train/val files from it.
"""

from typing import Any

from kfp import dsl, kubernetes

from graft.config import GraftConfig
from graft.kfp.components import make_components

PIPELINE_NAME = "graft-training"
# The chart's NetworkPolicy lets only pods with this label reach the MLflow server.
PIPELINE_POD_LABEL = ("graft.dev/pipeline", "true")
DEFAULT_IMAGE = "ghcr.io/graft-ml/graft:0.1.0-cpu"


def build_pipeline(image: str = DEFAULT_IMAGE, default_config: GraftConfig | None = None) -> Any:
    components = make_components(image)
    default_json = (default_config or GraftConfig()).to_json()

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="Graft: data-prep, pretrain, transfer-finetune, tune, evaluate, export",
    )
    def training_pipeline(config_json: str = default_json) -> str:
        prep = components["data-prep"](
            config_json=config_json, kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER
        )
        prep.set_display_name("data-prep")
        parent = prep.outputs["Output"]
        dataset = prep.outputs["dataset"]
        pre = components["pretrain"](config_json=config_json, parent_run_id=parent, dataset=dataset)
        pre.set_display_name("pretrain")
        fine = components["transfer-finetune"](
            config_json=config_json,
            parent_run_id=parent,
            dataset=dataset,
            pretrained=pre.outputs["model"],
        )
        fine.set_display_name("transfer-finetune")
        search = components["tune"](
            config_json=config_json,
            parent_run_id=parent,
            dataset=dataset,
            pretrained=pre.outputs["model"],
            finetuned=fine.outputs["model"],
        )
        search.set_display_name("tune")
        score = components["evaluate"](
            config_json=config_json,
            parent_run_id=parent,
            dataset=dataset,
            model=search.outputs["best_model"],
        )
        score.set_display_name("evaluate")
        # evaluate reads "the current champion": a cached result would be stale
        score.set_caching_options(False)
        ship = components["export"](
            config_json=config_json,
            parent_run_id=parent,
            dataset=dataset,
            model=search.outputs["best_model"],
            evaluation=score.outputs["evaluation"],
        )
        ship.set_display_name("export")
        ship.set_caching_options(False)
        for task in (prep, pre, fine, search, score, ship):
            kubernetes.add_pod_label(task, *PIPELINE_POD_LABEL)
        return ship.outputs["Output"]

    return training_pipeline
