"""The stages, one module each: ``run(config, ...)`` takes the config and the stage's
folders and MLflow parent run, and returns the stage's typed output (:mod:`.outputs`).

:mod:`.open_run` comes first: it opens the pipeline's MLflow parent run and digests the data,
so that data-prep and pretrain take only content-derived inputs and KFP's cache can reuse
them; :mod:`.monitor` then compares the data with the champion's and decides whether the
training stages run. The KFP adapters and the CLI call them (the training stages through
:mod:`graft.remote.dispatch`, which runs them here or ships them to the cluster); tests
exercise them without KFP. Each stage writes into its own MLflow run nested under the
pipeline's parent run. :mod:`.import_backbone` replaces pretrain when the backbone comes from
outside (model.family hf or graft). :mod:`.finalize` is the pipeline's exit task: it ends
FAILED the runs a failed or killed pipeline run left RUNNING.

Each stage module is imported when first named (``stages.tune``): a pipeline task runs one
stage in a fresh process, and importing all of them (torch, scikit-learn, ONNX, Ray Tune)
cost every task seconds it did not need.
"""

import importlib
from types import ModuleType
from typing import TYPE_CHECKING

from graft.stages.outputs import (
    DataPrepOutput,
    EvaluateOutput,
    ExportOutput,
    FinalizeOutput,
    ImportOutput,
    MonitorOutput,
    OpenRunOutput,
    TrainOutput,
    TuneOutput,
)

__all__ = [
    "DataPrepOutput",
    "EvaluateOutput",
    "ExportOutput",
    "FinalizeOutput",
    "ImportOutput",
    "MonitorOutput",
    "OpenRunOutput",
    "TrainOutput",
    "TuneOutput",
    "data_prep",
    "evaluate",
    "export",
    "finalize",
    "finetune",
    "import_backbone",
    "monitor",
    "open_run",
    "pretrain",
    "tune",
]

_STAGE_MODULES = frozenset(name for name in __all__ if name.islower())

if TYPE_CHECKING:
    from graft.stages import (
        data_prep,
        evaluate,
        export,
        finalize,
        finetune,
        import_backbone,
        monitor,
        open_run,
        pretrain,
        tune,
    )


def __getattr__(name: str) -> ModuleType:
    if name in _STAGE_MODULES:
        return importlib.import_module(f"graft.stages.{name}")
    raise AttributeError(f"module 'graft.stages' has no attribute {name!r}")
