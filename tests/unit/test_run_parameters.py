"""The run parameters a person fills in the KFP UI: typed in the compiled IR, resolved by one
function into the config every task runs with, and refused with one line when wrong."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from compiled_pipeline import parameter_source, pipeline_tasks

from graft.config import FINALIZE_TASK, GraftConfig, load_config
from graft.data.manifest import DataManifest
from graft.errors import ConfigError, TrackingError
from graft.io import tracking
from graft.kfp import adapters
from graft.kfp.compile import PIPELINE_FILE, compile_all
from graft.kfp.components import STAGE_FUNCTIONS
from graft.kfp.run_parameters import RunParameters, effective_config

ROOT = Path(__file__).resolve().parents[2]
UI_PARAMETERS = ("preset", "data_source", "overrides")


def _root_parameters(package: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The pipeline's parameters, and the spec."""
    spec = next(yaml.safe_load_all(package.read_text()))
    return spec["root"]["inputDefinitions"]["parameters"], spec


# ----------------------------------------------------------------------------- compiled IR


def test_committed_pipeline_has_the_typed_ui_parameters() -> None:
    parameters, spec = _root_parameters(ROOT / "pipelines" / PIPELINE_FILE)
    assert set(parameters) == {"config_json", *UI_PARAMETERS}
    types = {name: p["parameterType"] for name, p in parameters.items()}
    assert types == {
        "config_json": "STRING",
        "preset": "STRING",
        "data_source": "STRING",
        "overrides": "LIST",
    }
    assert parameters["preset"]["defaultValue"] == "default"
    assert parameters["data_source"]["defaultValue"] == ""
    assert parameters["overrides"]["defaultValue"] == []
    # the UI shows each parameter's description under its name
    assert all(p["description"] for p in parameters.values())
    assert "key.path=value" not in parameters["config_json"]["description"]
    # every task, the exit task too, receives the same four inputs from the pipeline, and
    # the compiled preset
    tasks = pipeline_tasks(spec)
    assert set(tasks) == {*STAGE_FUNCTIONS, FINALIZE_TASK}
    for name in tasks:
        for parameter in ("config_json", *UI_PARAMETERS):
            source = parameter_source(spec, name, parameter)
            assert source == {"componentInputParameter": parameter}, name
        assert parameter_source(spec, name, "compiled_preset") == {
            "runtimeValue": {"constant": "default"}
        }, name


def test_preset_parameter_defaults_to_the_preset_compiled_with(tmp_path: Path) -> None:
    written = compile_all(
        tmp_path / "pipelines", tmp_path / "components", config=None, preset="tiny"
    )
    parameters, spec = _root_parameters(written[0])
    assert parameters["preset"]["defaultValue"] == "tiny"
    assert json.loads(parameters["config_json"]["defaultValue"])["name"] == "graft-tiny"
    for task in ("tune", FINALIZE_TASK):
        assert parameter_source(spec, task, "compiled_preset") == {
            "runtimeValue": {"constant": "tiny"}
        }


def test_compile_help_documents_the_precedence() -> None:
    from typer.testing import CliRunner

    from graft.cli.app import app

    result = CliRunner().invoke(app, ["compile", "--help"], env={"COLUMNS": "400"})
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    for fragment in ("preset", "data_source", "overrides", "(4) overrides"):
        assert fragment in text


# ----------------------------------------------------------------------------- precedence


def _compiled(*overrides: str, preset: str = "default") -> str:
    """config_json as `graft compile --preset PRESET --set ...` writes it."""
    return load_config(preset=preset, overrides=list(overrides)).to_json()


def test_no_parameters_and_the_compiled_preset_keep_config_json() -> None:
    config_json = _compiled("finetune.epochs=7")
    assert effective_config(config_json).to_json() == config_json
    same = RunParameters(preset="default", compiled_preset="default")
    assert effective_config(config_json, same).to_json() == config_json
    # config_json may come from `graft submit --preset tiny`: the preset parameter is left at
    # the compiled one, so it runs as sent
    tiny = _compiled(preset="tiny")
    assert effective_config(tiny, same).to_json() == tiny


def test_another_preset_keeps_only_the_keys_config_json_changed() -> None:
    config_json = _compiled(
        "tracking.tracking_uri=http://mlflow.graft:5000",
        "export.model_name=fraud",
        "work_dir=/mnt/work",
    )
    got = effective_config(config_json, RunParameters(preset="tiny", compiled_preset="default"))
    expected = load_config(
        preset="tiny",
        overrides=[
            "tracking.tracking_uri=http://mlflow.graft:5000",
            "export.model_name=fraud",
            "work_dir=/mnt/work",
        ],
    )
    assert got == expected
    assert got.data.source == "builtin:digits" and got.pretrain.epochs == 3


def test_a_changed_mapping_is_kept_whole_not_merged_with_the_new_presets() -> None:
    space = "tune.space={finetune.optimizer.lr: {type: loguniform, low: 0.001, high: 0.01}}"
    got = effective_config(
        _compiled(space), RunParameters(preset="tiny", compiled_preset="default")
    )
    assert list(got.tune.space) == ["finetune.optimizer.lr"]
    assert got.tune.space["finetune.optimizer.lr"].high == 0.01


def test_data_source_then_overrides_win_in_that_order() -> None:
    config_json = _compiled("tracking.experiment_name=nightly")
    got = effective_config(
        config_json,
        RunParameters(
            preset="tiny",
            data_source="s3://bucket/rows.parquet",
            overrides=["finetune.epochs=2", "finetune.epochs=4", "data.max_rows=500"],
            compiled_preset="default",
        ),
    )
    assert got.data.source == "s3://bucket/rows.parquet"
    assert got.finetune.epochs == 4
    assert got.data.max_rows == 500
    assert got.tracking.experiment_name == "nightly"  # config_json's own key survived tiny
    assert got.name == "graft-tiny"
    last = effective_config(
        config_json,
        RunParameters(
            data_source="builtin:digits", overrides=["data.source=builtin:fashion_mnist"]
        ),
    )
    assert last.data.source == "builtin:fashion_mnist"


@pytest.mark.parametrize(
    ("parameters", "fragment"),
    [
        (RunParameters(preset="huge"), "unknown preset 'huge'; choose one of default, tiny"),
        (RunParameters(overrides=["finetune.epochs"]), "must look like key.path=value"),
        (RunParameters(overrides=["finetune.epoch=3"]), "finetune.epoch"),
        (RunParameters(overrides=["finetune.epochs=many"]), "finetune.epochs"),
        (RunParameters(overrides=[3]), "is not a string"),  # type: ignore[list-item]
        (RunParameters(overrides=["training_preset=self_normalizing"]), "graft compile"),
    ],
)
def test_bad_parameters_fail_with_one_line_naming_the_parameter(
    parameters: RunParameters, fragment: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        effective_config(_compiled(), parameters)
    message = str(refused.value)
    assert "\n" not in message
    assert fragment in message
    assert "pipeline parameter" in message


# ----------------------------------------------------------------------------- adapters


def test_every_adapter_runs_its_stage_with_the_same_effective_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each adapter hands its stage the config ``effective_config`` resolves (stages faked)."""
    from graft import stages

    seen: dict[str, GraftConfig] = {}

    def fake(stage: str, result: Any) -> Any:
        def run(config: GraftConfig, *args: Any, **kwargs: Any) -> Any:
            seen[stage] = config
            return result(*args)

        return run

    def prepared(dataset: str, *_: Any) -> stages.DataPrepOutput:
        (Path(dataset) / "report.html").write_text("<html></html>")
        return stages.DataPrepOutput(dataset, "parent", "hash", "")

    trained = stages.TrainOutput("m", "run", 0.9, 0.1, 3)
    tuned = tmp_path / "tuned"
    opened = stages.OpenRunOutput("parent", "digest", "pretrain")
    monkeypatch.setattr(stages.open_run, "run", fake("open-run", lambda *_: opened))

    def watched(out: str, *_: Any) -> stages.MonitorOutput:
        Path(out).mkdir(parents=True)
        (Path(out) / "drift_report.html").write_text("<html>drift</html>")
        report = str(Path(out) / "drift_report.html")
        return stages.MonitorOutput(True, "retrain: no champion yet", {}, [], report, out, "r", "p")

    monkeypatch.setattr(stages.monitor, "run", fake("monitor", watched))
    # data-prep and pretrain find the parent run open-run tagged with the data's digest
    monkeypatch.setattr(
        stages.open_run, "parent_run_for", lambda config, digest, in_pipeline: "parent"
    )
    monkeypatch.setattr(stages.data_prep, "run", fake("data-prep", prepared))
    monkeypatch.setattr(stages.pretrain, "run", fake("pretrain", lambda *_: trained))
    monkeypatch.setattr(stages.finetune, "run", fake("transfer-finetune", lambda *_: trained))
    best = tmp_path / "best"
    best.mkdir()
    searched = stages.TuneOutput(str(best), "run", 0.9, {"lr": 0.01}, "tuned", 3, 1, 0)

    def searching(*args: Any) -> stages.TuneOutput:
        scratch = Path(args[3])  # the adapter's scratch folder, next to the best model
        scratch.mkdir(parents=True)
        (scratch / "report.html").write_text("<html>tune</html>")
        return searched

    monkeypatch.setattr(stages.tune, "run", fake("tune", searching))

    def scored(dataset: str, test: str, model: str, out: str, *_: Any) -> stages.EvaluateOutput:
        report = {"report": {"confusion": [[3, 1], [0, 4]]}, "class_names": ["a", "b"]}
        (Path(out) / "metrics.json").write_text(json.dumps(report))
        (Path(out) / "report.html").write_text("<html></html>")
        return stages.EvaluateOutput(out, "run", 0.875, 0.5, None, True)

    monkeypatch.setattr(stages.evaluate, "run", fake("evaluate", scored))

    def shipped(*args: Any) -> stages.ExportOutput:
        (Path(args[3]) / "model_card.md").write_text("# Model card")
        return stages.ExportOutput("e", "run", "m", "1", ["challenger"], "t", "o", True, 0.9, 0.5)

    monkeypatch.setattr(stages.export, "run", fake("export", shipped))
    imported = stages.ImportOutput("m", "run", "/models/resnet", 6)
    monkeypatch.setattr(stages.import_backbone, "run", fake("import-backbone", lambda *_: imported))
    ended = stages.FinalizeOutput("FAILED", False, ["parent"], ["parent"])
    monkeypatch.setattr(stages.finalize, "run", fake(FINALIZE_TASK, lambda *_: ended))

    config_json = _compiled("tracking.experiment_name=ui")
    parameters = RunParameters(
        preset="tiny",
        data_source="builtin:digits",
        overrides=["finetune.epochs=2"],
        compiled_preset="default",
    )
    paths = {name: str(tmp_path / name) for name in ("data", "test", "html", "model", "eval")}
    branch, digest = tmp_path / "outputs" / "backbone", tmp_path / "outputs" / "data_digest"
    parent = adapters.open_run(config_json, "kfp-1", str(digest), str(branch), parameters)
    assert parent == "parent"
    assert branch.read_text() == "pretrain"  # the DAG's dsl.If reads it
    assert digest.read_text() == "digest"  # data-prep's and pretrain's cache key
    retrain = tmp_path / "outputs" / "retrain"
    drift = str(tmp_path / "drift.html")
    watched_json = adapters.monitor(config_json, "parent", drift, str(retrain), parameters)
    assert retrain.read_text() == "true"  # the dsl.If around the training stages reads it
    assert json.loads(watched_json)["reason"] == "retrain: no champion yet"
    assert Path(drift).read_text() == "<html>drift</html>"
    adapters.data_prep(
        config_json, "digest", paths["data"], paths["test"], paths["html"], parameters
    )
    summary = adapters.import_backbone(
        config_json, paths["data"], paths["model"], "parent", parameters
    )
    assert json.loads(summary)["backbone_blocks"] == 6
    figures = {
        stage: _Artifact(tmp_path / "figures" / stage) for stage in ("pretrain", "finetune", "tune")
    }
    adapters.pretrain(
        config_json, "digest", paths["data"], paths["model"], figures["pretrain"], parameters
    )
    adapters.finetune(
        config_json, paths["data"], "pre", paths["model"], "parent", figures["finetune"], parameters
    )
    adapters.tune(
        config_json,
        paths["data"],
        "pre",
        "fine",
        str(tuned / "best_model"),
        "parent",
        figures["tune"],
        str(tmp_path / "tune_report.html"),
        parameters,
    )
    adapters.evaluate(
        config_json,
        paths["data"],
        paths["test"],
        "model",
        paths["eval"],
        _Artifact(tmp_path / "figures" / "evaluate"),
        _Artifact(tmp_path / "figures" / "classification"),
        str(tmp_path / "evaluation_report.html"),
        "parent",
        "",
        parameters,
    )
    exported = str(tmp_path / "exported")
    card = str(tmp_path / "model_card.md")
    adapters.export(
        config_json, paths["data"], "m", paths["eval"], exported, "parent", card, parameters
    )

    adapters.finalize_run(config_json, "kfp-1", "FAILED", "Task stages failed.", parameters)

    expected = effective_config(config_json, parameters)
    assert set(seen) == {*STAGE_FUNCTIONS, FINALIZE_TASK}
    assert all(config == expected for config in seen.values())
    assert expected.finetune.epochs == 2 and expected.tracking.experiment_name == "ui"
    # and each filled its KFP outputs from what its stage returned or wrote
    assert figures["pretrain"].metadata == {"val_accuracy": 0.9, "val_loss": 0.1, "epochs_run": 3}
    # and in the artifact's file: KFP's local cache serves no task whose output file is missing
    for stage, artifact in figures.items():
        assert json.loads(Path(artifact.path).read_text()) == artifact.metadata, stage
    assert figures["tune"].metadata == {
        "val_accuracy": 0.9,
        "trials": 3,
        "trials_stopped_early": 1,
        "trials_before_first_epoch": 0,
        "tuned_model_handed_on": 1.0,
    }
    assert (tmp_path / "tune_report.html").read_text() == "<html>tune</html>"
    assert (tmp_path / "evaluation_report.html").read_text() == "<html></html>"
    assert Path(card).read_text() == "# Model card"


class _Artifact:
    """What a KFP Metrics/ClassificationMetrics output offers an adapter: the log methods and
    the local path of its file."""

    def __init__(self, path: Path) -> None:
        self.metadata: dict[str, Any] = {}
        self.path = str(path)

    def log_metric(self, name: str, value: float) -> None:
        self.metadata[name] = value

    def log_confusion_matrix(self, categories: list[str], matrix: list[list[int]]) -> None:
        self.metadata["confusionMatrix"] = {"categories": categories, "matrix": matrix}

    def log_roc_curve(self, fpr: list[float], tpr: list[float], threshold: list[float]) -> None:
        self.metadata["roc"] = (fpr, tpr, threshold)


def test_data_prep_adapter_prepares_the_preset_and_source_the_ui_chose(tmp_path: Path) -> None:
    """A real data-prep run: a config compiled from the default preset (Fashion-MNIST), run
    with preset=tiny and a row cap from the UI, prepares digits."""
    config_json = _compiled(
        f"work_dir={tmp_path / 'work'}",
        f"tracking.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
        "tracking.experiment_name=ui",
    )
    parameters = RunParameters(
        preset="tiny", overrides=["data.max_rows=600"], compiled_preset="default"
    )
    dataset = tmp_path / "dataset"
    digest = tmp_path / "outputs" / "data_digest"
    branch = str(tmp_path / "outputs" / "branch")
    adapters.open_run(config_json, "kfp-ui", str(digest), branch, parameters)
    adapters.data_prep(
        config_json,
        digest.read_text(),
        str(dataset),
        str(tmp_path / "test_split"),
        str(tmp_path / "report.html"),
        parameters,
    )
    manifest = DataManifest.read(dataset)
    assert manifest.source == "builtin:digits"
    assert manifest.num_rows <= 600
    assert (tmp_path / "report.html").stat().st_size > 0


def test_a_cacheable_task_without_open_runs_parent_fails_and_opens_no_orphan_run(
    tmp_path: Path,
) -> None:
    """In a pipeline open-run always tags the parent first; a data-prep that finds none (its
    pod sees another tracking store) says so instead of opening a parent run of its own."""
    config_json = _compiled(
        f"work_dir={tmp_path / 'work'}",
        f"tracking.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
    )
    config = effective_config(config_json, None)
    with pytest.raises(TrackingError, match="open-run, the pipeline's first task"):
        adapters.data_prep(
            config_json,
            "digest-nobody-tagged",
            str(tmp_path / "dataset"),
            str(tmp_path / "test_split"),
            str(tmp_path / "report.html"),
        )
    assert tracking.runs_tagged(config, {"graft.kind": "pipeline"}) == []
    assert not (tmp_path / "dataset" / "manifest.json").exists()
