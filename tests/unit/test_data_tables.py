"""CSV sources, string labels as class names, and the preset's class split on other data
(issue 20, part 1 "Sources")."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_helpers import assert_one_clear_error, run_graft

from graft.config import DataConfig, load_config
from graft.data.prepare import check_source, prepare_dataset
from graft.data.sources import load_source
from graft.errors import DatasetError
from graft.kfp.run_parameters import RunParameters, effective_config

NAMES = ["setosa", "versicolor", "virginica"]


def _iris_frame() -> pd.DataFrame:
    from sklearn.datasets import load_iris

    bunch = load_iris(as_frame=True)
    frame = bunch.frame.drop(columns="target")
    frame["species"] = [str(bunch.target_names[t]) for t in bunch.target]
    return frame


def _binary_frame(rows: int = 80, label: object = "label") -> pd.DataFrame:
    rng = np.random.default_rng(3)
    frame = pd.DataFrame(rng.normal(size=(rows, 4)), columns=["a", "b", "c", "d"])
    frame[label] = np.where(np.arange(rows) % 2, "malignant", "benign")
    frame["a"] += (frame[label] == "malignant") * 3.0  # learnable, not a perfect leak
    return frame


def test_a_csv_with_string_labels_reads_as_features_and_sorted_class_names(
    tmp_path: Path,
) -> None:
    source = tmp_path / "iris.csv"
    frame = _iris_frame().sample(frac=1.0, random_state=0)  # names out of order in the file
    frame.to_csv(source, index=False)
    raw = load_source(str(source), "species")
    assert raw.kind == "tabular"
    assert raw.x.shape == (150, 4) and raw.x.dtype == np.float32
    assert raw.feature_names == [c for c in frame.columns if c != "species"]
    assert raw.class_names == NAMES  # sorted distinct strings
    assert [raw.class_names[i] for i in raw.y] == frame["species"].tolist()
    np.testing.assert_allclose(raw.x, frame.drop(columns="species").to_numpy(), rtol=1e-6)


def test_integer_labels_read_as_before_from_csv_and_parquet(tmp_path: Path) -> None:
    frame = _binary_frame()
    frame["label"] = (frame["label"] == "malignant").astype(int) * 2  # ids 0 and 2
    for suffix in (".csv", ".parquet"):
        source = tmp_path / f"ints{suffix}"
        frame.to_csv(source, index=False) if suffix == ".csv" else frame.to_parquet(source)
        raw = load_source(str(source), "label")
        assert raw.class_names == []  # unnamed: data-prep names them "0".."K-1" as before
        assert raw.y.dtype == np.int64
        assert raw.y.tolist() == frame["label"].tolist()


def test_string_labels_become_class_names_through_data_prep(tmp_path: Path) -> None:
    source = tmp_path / "iris.parquet"
    _iris_frame().to_parquet(source)
    config = DataConfig(source=str(source), label_column="species", transfer={"target_classes": []})
    manifest = prepare_dataset(config, seed=0, output_dir=tmp_path / "dataset")
    for task in ("source", "target"):
        assert manifest.tasks[task].class_names == NAMES
        assert manifest.tasks[task].classes == [0, 1, 2]
    written = json.loads((tmp_path / "dataset" / "manifest.json").read_text())
    assert written["tasks"]["target"]["class_names"] == NAMES


def test_a_class_split_on_string_labels_names_positions_in_the_sorted_names(
    tmp_path: Path,
) -> None:
    source = tmp_path / "iris.csv"
    frame = _iris_frame()
    frame = pd.concat([frame, frame.assign(species=frame["species"] + "-b")])
    frame.iloc[150:, :4] += 10.0  # four classes of distinct rows
    frame = frame[frame["species"] != "virginica-b"]
    frame.to_csv(source, index=False)
    config = DataConfig(
        source=str(source), label_column="species", transfer={"target_classes": [0, 2]}
    )
    manifest = prepare_dataset(config, seed=0, output_dir=tmp_path / "dataset")
    names = sorted(set(frame["species"]))
    assert manifest.tasks["target"].class_names == [names[0], names[2]]
    assert manifest.tasks["source"].class_names == [names[1], names[3], names[4]]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("a,b,label\n1,2,x\n3,y\n1,5,y\n", "line 3 has 2 fields, the header has 3"),
        ("a,b,label\n1,2,x\n3,4,5,y\n", "line 3 has 4 fields, the header has 3"),
        ("a,b,label\n1,2,x\n3,oops,y\n", "column 'b' has 1 values that are not numbers"),
        ("a,b,kind\n1,2,x\n3,4,y\n", "has no label column 'label'"),
        ("", "is empty; a CSV needs a header row"),
        ('a,b,label\n1,2,"x\n', "is not a readable CSV file"),
    ],
    ids=["short row", "long row", "not a number", "no label column", "empty", "open quote"],
)
def test_a_bad_csv_is_one_dataset_error_naming_the_users_file(
    tmp_path: Path, text: str, fragment: str
) -> None:
    source = tmp_path / "user's data#1.csv"
    source.write_text(text)
    with pytest.raises(DatasetError) as caught:
        check_source(DataConfig(source=str(source), transfer={"target_classes": []}))
    message = str(caught.value)
    assert fragment in message, message
    assert str(source) in message
    assert "graft-data-" not in message


def test_the_cli_ends_a_ragged_csv_in_one_error_line(tmp_path: Path) -> None:
    source = tmp_path / "ragged.csv"
    source.write_text("a,b,label\n1,2,x\n3,y\n")
    result = run_graft("run", "-p", "tiny", "--set", f"data.source={source}")
    line = assert_one_clear_error(result, f"{source}: line 3 has 2 fields")
    assert "graft-data-" not in line


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_binary_table_under_the_tiny_preset_needs_no_class_split_flag(
    tmp_path: Path, suffix: str
) -> None:
    source = tmp_path / f"binary{suffix}"
    frame = _binary_frame()
    frame.to_csv(source, index=False) if suffix == ".csv" else frame.to_parquet(source)
    config = load_config(preset="tiny", overrides=[f"data.source={source}"])
    assert config.data.transfer.target_classes == []
    assert config.data.transfer.target_train_size is None
    check_source(config.data)  # the preset's [3, 8] would have refused this
    assert load_config(preset="tiny").data.transfer.target_classes == [3, 8]  # digits keep it


def test_a_class_split_the_user_names_is_kept_and_a_bad_one_says_how_to_turn_it_off(
    tmp_path: Path,
) -> None:
    source = tmp_path / "binary.csv"
    _binary_frame().to_csv(source, index=False)
    config = load_config(
        preset="tiny", overrides=[f"data.source={source}", "data.transfer.target_classes=[3, 8]"]
    )
    assert config.data.transfer.target_classes == [3, 8]
    with pytest.raises(DatasetError) as caught:
        check_source(config.data)
    message = str(caught.value)
    assert "--set 'data.transfer.target_classes=[]'" in message
    assert "0 (benign), 1 (malignant)" in message


def test_a_yaml_file_naming_a_split_keeps_it(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(
        f"data:\n  source: {tmp_path / 'x.csv'}\n  transfer:\n    target_classes: [0, 1]\n"
    )
    assert load_config(path, preset="tiny").data.transfer.target_classes == [0, 1]


def test_the_pipelines_data_source_parameter_drops_the_presets_split_too() -> None:
    compiled = load_config(preset="tiny").model_dump_json()
    given = RunParameters(data_source="s3://bucket/mine.csv", compiled_preset="tiny")
    assert effective_config(compiled, given).data.transfer.target_classes == []
    named = RunParameters(
        data_source="s3://bucket/mine.csv",
        compiled_preset="tiny",
        overrides=("data.transfer.target_classes=[0, 1]",),
    )
    assert effective_config(compiled, named).data.transfer.target_classes == [0, 1]
