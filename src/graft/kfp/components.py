"""The stages' KFP v2 components and the pipeline's exit task: each body calls one
``graft.kfp.adapters`` function.

Bodies are module-level functions so KFP can ship their source; ``make_components`` binds
them to an image chosen at compile time (the image already has graft installed, so
``packages_to_install`` stays empty).

Every component takes the pipeline's run parameters (``preset``, ``data_source``,
``overrides``) next to ``config_json`` and hands them to its adapter, which resolves the run's
config from them (:mod:`graft.kfp.run_parameters`). KFP reads a parameter's default from the
signature, hence the literal ``[]`` (never mutated).
"""

from typing import Any

from kfp import dsl
from kfp.dsl import HTML, ClassificationMetrics, Dataset, Input, Markdown, Metrics, Model, Output


def open_run(
    config_json: str,
    kfp_run_id: str,
    data_digest: dsl.OutputPath(str),  # type: ignore[valid-type]
    backbone: dsl.OutputPath(str),  # type: ignore[valid-type]
    preset: str = "",
    compiled_preset: str = "",
    data_source: str = "",
    overrides: list[str] = [],  # noqa: B006
) -> str:
    """Start the MLflow parent run (returned); digest the data for the cacheable stages;
    ``backbone`` says which branch follows data-prep: pretrain, or import-backbone for an
    external backbone or the warm start's champion. Never cached."""
    from graft.kfp import adapters

    return adapters.open_run(
        config_json,
        kfp_run_id,
        data_digest,
        backbone,
        adapters.RunParameters(preset, data_source, overrides, compiled_preset),
    )


def monitor(
    config_json: str,
    parent_run_id: str,
    drift_report: Output[HTML],
    retrain: dsl.OutputPath(str),  # type: ignore[valid-type]
    preset: str = "",
    compiled_preset: str = "",
    data_source: str = "",
    overrides: list[str] = [],  # noqa: B006
) -> str:
    """Compare the data with the champion's training data (PSI, KS, label shift, a domain
    classifier); ``retrain`` (monitor.retrain_when) says whether the training stages run.
    Never cached."""
    from graft.kfp import adapters

    return adapters.monitor(
        config_json,
        parent_run_id,
        drift_report.path,
        retrain,
        adapters.RunParameters(preset, data_source, overrides, compiled_preset),
    )


def data_prep(
    config_json: str,
    data_digest: str,
    dataset: Output[Dataset],
    test_split: Output[Dataset],
    data_report: Output[HTML],
    preset: str = "",
    compiled_preset: str = "",
    data_source: str = "",
    overrides: list[str] = [],  # noqa: B006
) -> str:
    """Read, validate, deduplicate and split the data (test rows sealed in ``test_split``);
    return the dataset's hash. Cached by KFP while the data (``data_digest``) and the config
    are unchanged."""
    from graft.kfp import adapters

    return adapters.data_prep(
        config_json,
        data_digest,
        dataset.path,
        test_split.path,
        data_report.path,
        adapters.RunParameters(preset, data_source, overrides, compiled_preset),
    )


def pretrain(
    config_json: str,
    data_digest: str,
    dataset: Input[Dataset],
    model: Output[Model],
    metrics: Output[Metrics],
    preset: str = "",
    compiled_preset: str = "",
    data_source: str = "",
    overrides: list[str] = [],  # noqa: B006
) -> float:
    """Train the source-task model with Ray Train (DDP, checkpointed, early stopping). Cached
    by KFP while the data and the config are unchanged."""
    from graft.kfp import adapters

    return adapters.pretrain(
        config_json,
        data_digest,
        dataset.path,
        model.path,
        metrics,
        adapters.RunParameters(preset, data_source, overrides, compiled_preset),
    )


def import_backbone(
    config_json: str,
    parent_run_id: str,
    dataset: Input[Dataset],
    model: Output[Model],
    preset: str = "",
    compiled_preset: str = "",
    data_source: str = "",
    overrides: list[str] = [],  # noqa: B006
) -> str:
    """Load the external backbone named by ``model.pretrained`` (a Hugging Face model's
    safetensors, or a backbone an earlier Graft pipeline registered) into a model folder, as
    pretrain would have written one."""
    from graft.kfp import adapters

    return adapters.import_backbone(
        config_json,
        dataset.path,
        model.path,
        parent_run_id,
        adapters.RunParameters(preset, data_source, overrides, compiled_preset),
    )


def transfer_finetune(
    config_json: str,
    parent_run_id: str,
    dataset: Input[Dataset],
    pretrained: Input[Model],
    model: Output[Model],
    metrics: Output[Metrics],
    preset: str = "",
    compiled_preset: str = "",
    data_source: str = "",
    overrides: list[str] = [],  # noqa: B006
) -> float:
    """Reuse the pretrained backbone, new head, frozen then unfrozen phases."""
    from graft.kfp import adapters

    return adapters.finetune(
        config_json,
        dataset.path,
        pretrained.path,
        model.path,
        parent_run_id,
        metrics,
        adapters.RunParameters(preset, data_source, overrides, compiled_preset),
    )


def tune(
    config_json: str,
    parent_run_id: str,
    dataset: Input[Dataset],
    pretrained: Input[Model],
    finetuned: Input[Model],
    best_model: Output[Model],
    metrics: Output[Metrics],
    report: Output[HTML],
    preset: str = "",
    compiled_preset: str = "",
    data_source: str = "",
    overrides: list[str] = [],  # noqa: B006
) -> str:
    """Ray Tune (Bayesian search + ASHA) over the finetune; outputs the best model, the
    search's figures and its report (best parameters, every trial, plots)."""
    from graft.kfp import adapters

    return adapters.tune(
        config_json,
        dataset.path,
        pretrained.path,
        finetuned.path,
        best_model.path,
        parent_run_id,
        metrics,
        report.path,
        adapters.RunParameters(preset, data_source, overrides, compiled_preset),
    )


def evaluate(
    config_json: str,
    parent_run_id: str,
    dataset: Input[Dataset],
    test_split: Input[Dataset],
    model: Input[Model],
    pretrained: Input[Model],
    evaluation: Output[Dataset],
    metrics: Output[Metrics],
    classification: Output[ClassificationMetrics],
    report: Output[HTML],
    preset: str = "",
    compiled_preset: str = "",
    data_source: str = "",
    overrides: list[str] = [],  # noqa: B006
) -> bool:
    """Test split vs majority baseline and current champion; the promotion gate. The KFP UI
    shows the test metrics, the confusion matrix (and ROC curve, binary tasks) and the report."""
    from graft.kfp import adapters

    return adapters.evaluate(
        config_json,
        dataset.path,
        test_split.path,
        model.path,
        evaluation.path,
        metrics,
        classification,
        report.path,
        parent_run_id,
        pretrained.path,
        adapters.RunParameters(preset, data_source, overrides, compiled_preset),
    )


def export(
    config_json: str,
    parent_run_id: str,
    dataset: Input[Dataset],
    model: Input[Model],
    evaluation: Input[Dataset],
    exported: Output[Model],
    model_card: Output[Markdown],
    preset: str = "",
    compiled_preset: str = "",
    data_source: str = "",
    overrides: list[str] = [],  # noqa: B006
) -> str:
    """TorchScript + ONNX with parity checks on the validation split; register; move aliases
    through the gate; the model card as a Markdown output."""
    from graft.kfp import adapters

    return adapters.export(
        config_json,
        dataset.path,
        model.path,
        evaluation.path,
        exported.path,
        parent_run_id,
        model_card.path,
        adapters.RunParameters(preset, data_source, overrides, compiled_preset),
    )


def finalize_run(
    config_json: str,
    kfp_run_id: str,
    status: dsl.PipelineTaskFinalStatus,
    preset: str = "",
    compiled_preset: str = "",
    data_source: str = "",
    overrides: list[str] = [],  # noqa: B006
) -> None:
    """The exit task: when the stages failed or were cancelled, end FAILED the MLflow runs they
    left RUNNING (a killed stage never ends its own)."""
    from graft.kfp import adapters

    adapters.finalize_run(
        config_json,
        kfp_run_id,
        status.state,
        status.error_message or "",
        adapters.RunParameters(preset, data_source, overrides, compiled_preset),
    )


STAGE_FUNCTIONS = {
    "open-run": open_run,
    "monitor": monitor,
    "data-prep": data_prep,
    "pretrain": pretrain,
    "import-backbone": import_backbone,
    "transfer-finetune": transfer_finetune,
    "tune": tune,
    "evaluate": evaluate,
    "export": export,
}


def make_components(image: str) -> dict[str, Any]:
    """One component per stage (``components/<stage>.yaml``)."""
    return {name: _component(image, function) for name, function in STAGE_FUNCTIONS.items()}


def make_exit_component(image: str) -> Any:
    """The exit task's component, :func:`finalize_run`."""
    return _component(image, finalize_run)


def _component(image: str, function: Any) -> Any:
    # the image ships graft and kfp: nothing is pip-installed when a pod starts
    return dsl.component(base_image=image, install_kfp_package=False)(function)
