"""The stages, one module each: ``run(config, ...)`` takes the config and the stage's
folders and MLflow parent run, and returns the stage's typed output (:mod:`.outputs`).

The KFP adapters and the CLI call them (the training stages through
:mod:`graft.remote.dispatch`, which runs them here or ships them to the cluster); tests
exercise them without KFP. Each stage writes into its own MLflow run nested under the
pipeline's parent run. :mod:`.import_backbone` replaces pretrain when the backbone comes from
outside (model.family hf or graft). :mod:`.finalize` is the pipeline's exit task: it ends
FAILED the runs a failed or killed pipeline run left RUNNING.
"""

from graft.stages import (
    data_prep,
    evaluate,
    export,
    finalize,
    finetune,
    import_backbone,
    pretrain,
    tune,
)
from graft.stages.outputs import (
    DataPrepOutput,
    EvaluateOutput,
    ExportOutput,
    FinalizeOutput,
    ImportOutput,
    TrainOutput,
    TuneOutput,
)

__all__ = [
    "DataPrepOutput",
    "EvaluateOutput",
    "ExportOutput",
    "FinalizeOutput",
    "ImportOutput",
    "TrainOutput",
    "TuneOutput",
    "data_prep",
    "evaluate",
    "export",
    "finalize",
    "finetune",
    "import_backbone",
    "pretrain",
    "tune",
]
