"""data.loader: streaming (issue 20): data-prep writes split manifests (files, content hashes,
labels) instead of arrays; splits follow the content hash, copies land together, the
normalization statistics equal the in-memory ones, and the test files stay sealed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from graft.config.data import DataConfig
from graft.data.holdout import load_holdout
from graft.data.manifest import DataManifest
from graft.data.prepare import load_split, prepare_dataset
from graft.data.preprocessing import scaling_statistics
from graft.data.streaming_manifest import manifest_path, read_manifest
from graft.data.streaming_read import load_streamed_split
from graft.errors import DatasetError
from image_folders import digits_folder

SPLIT_FILES = {"train": "out", "val": "out", "test": "out-test"}


def _prepare(root: Path, out: Path, seed: int = 0, **settings: object) -> DataManifest:
    config = DataConfig.model_validate({"source": str(root), "loader": "streaming", **settings})
    return prepare_dataset(config, seed, out / "out", out / "out-test")


def _files(out: Path, task: str = "source") -> dict[str, dict[str, str]]:
    """split -> file path -> sha256, from the manifests data-prep wrote."""
    listed = {}
    for split, folder in SPLIT_FILES.items():
        table = read_manifest(manifest_path(out / folder, task, split)).to_pydict()
        listed[split] = dict(zip(table["uri"], table["sha256"], strict=True))
    return listed


def test_the_split_is_a_function_of_the_content_hash_and_the_seed(tmp_path: Path) -> None:
    root = digits_folder(tmp_path / "digits", per_class=40)
    first, again = _prepare(root, tmp_path / "a"), _prepare(root, tmp_path / "b")
    assert first.dataset_hash == again.dataset_hash and first.split_strategy == "hash"
    for split, folder in SPLIT_FILES.items():
        one = manifest_path(tmp_path / "a" / folder, "source", split).read_bytes()
        assert one == manifest_path(tmp_path / "b" / folder, "source", split).read_bytes()
    # a file keeps its split when others are added: a grown dataset never moves a test file
    before = _files(tmp_path / "a")
    more = tmp_path / "more"
    shutil.copytree(root, more)
    digits_folder(tmp_path / "extra", per_class=60)
    for path in (tmp_path / "extra").rglob("*.png"):
        if not (more / path.relative_to(tmp_path / "extra")).exists():
            shutil.copy(path, more / path.relative_to(tmp_path / "extra"))
    _prepare(more, tmp_path / "c")
    grown = _files(tmp_path / "c")
    hashes = {name: set(files.values()) for name, files in grown.items()}
    for split, files in before.items():
        assert set(files.values()) <= hashes[split]
    # another seed draws another split
    _prepare(root, tmp_path / "d", seed=1)
    assert set(_files(tmp_path / "d")["test"]) != set(before["test"])


def test_copies_land_in_one_split_and_the_splits_share_no_content(tmp_path: Path) -> None:
    root = digits_folder(tmp_path / "digits", per_class=40)
    copied = sorted((root / "zero").glob("*.png"))[:5]
    for index, path in enumerate(copied):
        shutil.copy(path, root / "zero" / f"copy{index}.png")  # same bytes, same class
    shutil.copy(copied[0], root / "one" / "mislabelled.png")  # same bytes, another class
    manifest = _prepare(root, tmp_path)
    assert manifest.duplicates.exact_duplicates_dropped == 6
    assert manifest.duplicates.conflicting_labels == 1
    files = _files(tmp_path)
    contents = [set(split.values()) for split in files.values()]
    assert sum(len(c) for c in contents) == len(set().union(*contents))  # disjoint by hash
    assert all(len(set(split.values())) == len(split) for split in files.values())
    splits = json.loads((tmp_path / "out" / "splits.json").read_text())
    assert splits["strategy"] == "hash"


def test_normalization_statistics_equal_the_in_memory_computation(tmp_path: Path) -> None:
    root = digits_folder(tmp_path / "digits", per_class=40, mode="RGB")
    for method in ("standardize", "minmax"):
        out = tmp_path / method
        manifest = _prepare(root, out, normalize=method, transfer={"target_classes": []})
        x_train, _ = load_split(out / "out", "source", "train")  # decoded from the manifest
        assert x_train.shape == (manifest.tasks["source"].sizes["train"], 3, 8, 8)
        mean, std = scaling_statistics(x_train, "image", method)
        info = manifest.tasks["source"]
        np.testing.assert_allclose(info.mean, mean, rtol=1e-5)
        np.testing.assert_allclose(info.std, std, rtol=1e-5)


def test_test_files_are_only_in_the_sealed_test_split(tmp_path: Path) -> None:
    root = digits_folder(tmp_path / "digits", per_class=40)
    manifest = _prepare(root, tmp_path)
    out = tmp_path / "out"
    assert not list(out.rglob("test*")), "no test file list in the dataset directory"
    files = _files(tmp_path)
    test = set(files["test"].values())
    assert test and not test & (set(files["train"].values()) | set(files["val"].values()))
    x_test, y_test = load_holdout(tmp_path / "out-test", "source", out)
    assert len(x_test) == len(y_test) == manifest.tasks["source"].sizes["test"]
    with pytest.raises(DatasetError, match="sealed"):
        load_split(out, "source", "test")


def test_near_duplicates_are_looked_for_in_a_sample_and_the_report_says_so(
    tmp_path: Path,
) -> None:
    root = digits_folder(tmp_path / "digits", per_class=40)
    for path in sorted((root / "two").glob("*.png"))[:20]:  # one pixel changed: near copies
        pixels = np.asarray(Image.open(path)).copy()
        pixels[0, 0] = 255 - pixels[0, 0]
        Image.fromarray(pixels).save(root / "two" / f"near-{path.name}")
    everything = _prepare(root, tmp_path / "all", near_duplicate_threshold=0.9)
    assert everything.near_duplicates_found > 0
    _prepare(
        root,
        tmp_path / "sample",
        near_duplicate_threshold=0.9,
        streaming={"near_duplicate_sample": 40},
    )
    report = json.loads((tmp_path / "sample" / "out" / "report.json").read_text())
    assert report["near_duplicates"]["sampled_rows"] == 40
    assert "approximate" in (tmp_path / "sample" / "out" / "report.html").read_text()


def test_a_changed_file_is_refused_when_streamed(tmp_path: Path) -> None:
    root = digits_folder(tmp_path / "digits", per_class=20)
    _prepare(root, tmp_path)
    train = manifest_path(tmp_path / "out", "source", "train")
    changed = Path(read_manifest(train).to_pydict()["uri"][0])
    Image.new("L", (8, 8), 7).save(changed)
    with pytest.raises(DatasetError, match="changed after data-prep"):
        load_streamed_split(train, tmp_path / "out")


@pytest.mark.parametrize(
    ("settings", "refusal"),
    [
        ({"source": "builtin:digits"}, "reads image folders"),
        ({"source": "s3://bucket/table.csv"}, "reads image folders"),
        ({"source": "rows.npz"}, "reads image folders"),
        ({"source": "pets", "split": "time", "time_column": "t"}, "split 'time'"),
    ],
)
def test_streaming_refuses_what_it_cannot_stream(settings: dict, refusal: str) -> None:
    with pytest.raises(ValidationError, match=refusal) as refused:
        DataConfig.model_validate({"loader": "streaming", **settings})
    assert "data.loader=memory" in str(refused.value)
