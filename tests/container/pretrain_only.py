"""The pretrain task alone, as a pipeline (no ``from __future__ import annotations`` here:
KFP reads the pipeline function's annotations as types, not strings)."""

from typing import Any


def pretrain_pipeline(components: dict[str, Any]) -> Any:
    """The pretrain task alone, on a dataset data-prep already made (KFP's local runner takes
    no artifact as the input of a single task, so an importer hands it over)."""
    from kfp import dsl
    from kfp.dsl import Dataset, Model

    @dsl.pipeline(name="pretrain-on-a-prepared-dataset")
    def pretrain_only(config_json: str, data_digest: str, dataset_uri: str) -> Model:
        dataset = dsl.importer(artifact_uri=dataset_uri, artifact_class=Dataset, reimport=False)
        # pretrain logs under the parent run open-run tagged with this digest and config
        task = components["pretrain"](
            config_json=config_json, data_digest=data_digest, dataset=dataset.output
        )
        return task.outputs["model"]  # type: ignore[no-any-return]

    return pretrain_only
