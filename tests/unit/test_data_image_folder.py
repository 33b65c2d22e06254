"""An image folder as data.source (issue 20): one subfolder per class, PNG/JPEG of any size,
read into the N x C x H x W array the built-in image datasets give; every bad folder ends in
one error naming the user's path and the fix."""

from __future__ import annotations

import io
import logging
import shutil
import uuid
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import assert_one_clear_error, run_graft
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from pydantic import ValidationError
from sklearn.datasets import load_digits

from graft.config.data import DataConfig, ImageConfig
from graft.data.prepare import prepare_dataset
from graft.data.sources import load_source
from graft.errors import DatasetError
from graft.io import storage
from image_folders import digits_folder


def _load(root: Path | str, **image: object) -> tuple[np.ndarray, np.ndarray, list[str]]:
    raw = load_source(str(root), "label", image=ImageConfig.model_validate(image))
    assert raw.kind == "image"
    return raw.x, raw.y, raw.class_names


def _refused(root: Path | str, **image: object) -> str:
    with pytest.raises(DatasetError) as refused:
        _load(root, **image)
    message = str(refused.value)
    assert "graft-images-" not in message  # never the local copy's name
    return message


# ------------------------------------------------------------------------------ reading


def test_an_image_folder_reads_as_n_c_h_w_with_the_folder_names_as_classes(
    tmp_path: Path,
) -> None:
    root = digits_folder(tmp_path / "digits")
    x, y, classes = _load(root)
    assert classes == ["one", "two", "zero"]  # sorted folder names; label i is classes[i]
    assert x.shape == (60, 1, 8, 8) and x.dtype == np.float32
    assert np.bincount(y).tolist() == [20, 20, 20]
    # the pixels are the PNG's, 0-255, and each row sits under its own folder's label
    first_zero = np.flatnonzero(load_digits().target == 0)[0]
    with Image.open(root / "zero" / f"{first_zero}.png") as image:
        expected = np.asarray(image, dtype=np.float32)
    row = np.flatnonzero(y == classes.index("zero"))[0]
    np.testing.assert_array_equal(x[row, 0], expected)


def test_size_and_channels_resize_and_convert_every_image(tmp_path: Path) -> None:
    root = digits_folder(tmp_path / "digits", per_class=3)
    x, _, _ = _load(root, size=16)
    assert x.shape == (9, 1, 16, 16)
    x, _, _ = _load(root, size=[12, 10], channels=3)
    assert x.shape == (9, 3, 12, 10)
    np.testing.assert_array_equal(x[:, 0], x[:, 2])  # grey to RGB: three equal planes


def test_colour_jpegs_read_as_three_channels(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        (tmp_path / "pets" / name).mkdir(parents=True)
        for i in range(3):
            pixels = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
            Image.fromarray(pixels, "RGB").save(tmp_path / "pets" / name / f"{i}.JPG")
    x, y, classes = _load(tmp_path / "pets")
    assert x.shape == (6, 3, 20, 30) and classes == ["cat", "dog"]
    assert y.tolist() == [0, 0, 0, 1, 1, 1]


def test_a_phones_exif_orientation_is_applied(tmp_path: Path) -> None:
    """A portrait photo stored landscape with EXIF orientation 6 (turn 90 degrees clockwise)
    reads upright, as every viewer shows it, and its upright size is the one checked."""
    stored = np.zeros((20, 30), dtype=np.uint8)  # 30 wide, 20 high as stored
    stored[:, :5] = 255  # a bright band on the stored image's left edge
    exif = Image.Exif()
    exif[0x0112] = 6
    for name in ("portrait", "upright"):
        (tmp_path / "photos" / name).mkdir(parents=True)
    Image.fromarray(stored, "L").save(tmp_path / "photos" / "portrait" / "p.jpg", exif=exif)
    upright = np.rot90(stored, k=-1)  # what orientation 6 shows: 20 wide, 30 high
    Image.fromarray(np.ascontiguousarray(upright), "L").save(
        tmp_path / "photos" / "upright" / "u.png"
    )
    x, _, _ = _load(tmp_path / "photos")
    assert x.shape == (2, 1, 30, 20)  # one size: no "set data.image.size" refusal
    turned = x[0, 0]
    assert turned[:5].mean() > 200 and turned[10:].mean() < 50  # the band is now on top
    assert np.array_equal(x[1, 0], upright.astype(np.float32))


def test_hidden_files_and_folders_are_skipped(tmp_path: Path) -> None:
    root = digits_folder(tmp_path / "digits", per_class=2)
    (root / ".DS_Store").write_bytes(b"\0\1")
    (root / "one" / ".notes.txt").write_text("mine")
    (root / ".ipynb_checkpoints").mkdir()
    (root / "two" / ".cache").mkdir()
    (root / "two" / ".cache" / "x.txt").write_text("cache")
    x, _, classes = _load(root)
    assert len(x) == 6 and classes == ["one", "two", "zero"]


def test_data_prep_keeps_the_folder_names_in_the_manifest(tmp_path: Path) -> None:
    # 60 images a class: each image's split is drawn on its own, and with 20 a class the
    # 10% val split (about 6 images) would often miss a class
    root = digits_folder(tmp_path / "digits", per_class=60)
    config = DataConfig(source=str(root))
    manifest = prepare_dataset(config, 0, tmp_path / "out", tmp_path / "test")
    assert manifest.kind == "image" and manifest.input_shape == [1, 8, 8]
    assert manifest.tasks["target"].class_names == ["one", "two", "zero"]
    assert manifest.tasks["source"].class_names == ["one", "two", "zero"]


def test_an_s3_prefix_is_downloaded_and_errors_name_the_users_uri(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = digits_folder(tmp_path / "digits", per_class=2)

    def download_tree(uri: str, local_dir: Path) -> Path:
        assert uri == "s3://bucket/digits/"
        shutil.copytree(root, local_dir)
        return local_dir

    monkeypatch.setattr(storage, "download_tree", download_tree)
    x, _, classes = _load("s3://bucket/digits/")
    assert x.shape == (6, 1, 8, 8) and classes == ["one", "two", "zero"]
    (root / "two" / "broken.png").write_bytes(b"not a png")
    message = _refused("s3://bucket/digits/")
    assert message.startswith("s3://bucket/digits/two/broken.png is not a readable image")


# ---------------------------------------------------------------------------- bad input


def test_a_corrupt_or_truncated_image_is_named(tmp_path: Path) -> None:
    root = digits_folder(tmp_path / "digits", per_class=2)
    (root / "one" / "zz.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    message = _refused(root)
    assert message.startswith(f"{root}/one/zz.png is not a readable image")
    assert message.endswith("replace or remove it")
    big = np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)
    Image.fromarray(big, "L").save(root / "one" / "zz.png")
    data = (root / "one" / "zz.png").read_bytes()
    (root / "one" / "zz.png").write_bytes(data[: len(data) // 2])  # cut mid-stream
    assert _refused(root, size=8).startswith(f"{root}/one/zz.png is not a readable image")


def test_an_empty_class_folder_is_refused(tmp_path: Path) -> None:
    root = digits_folder(tmp_path / "digits", per_class=2)
    (root / "three").mkdir()
    (root / "three" / ".keep").write_text("")  # hidden: the folder is still empty
    message = _refused(root)
    assert message == (
        f"{root}/three is an empty class folder; add its images or remove the folder"
    )


def test_fewer_than_two_class_folders_are_refused(tmp_path: Path) -> None:
    root = digits_folder(tmp_path / "digits", per_class=2)
    for name in ("one", "two"):
        shutil.rmtree(root / name)
    assert "holds 1 class folder(s) ['zero']" in _refused(root)
    assert "one subfolder per class" in _refused(root)


def test_files_that_are_not_images_are_refused_by_name(tmp_path: Path) -> None:
    root = digits_folder(tmp_path / "digits", per_class=2)
    (root / "two" / "labels.csv").write_text("a,b\n")
    assert _refused(root).startswith(f"{root}/two/labels.csv is not a .png/.jpg/.jpeg image")
    (root / "two" / "labels.csv").unlink()
    (root / "README.txt").write_text("my data")
    assert _refused(root).startswith(f"{root}/README.txt is a file at the top")


def test_mixed_modes_are_refused_unless_channels_says_what_to_convert_to(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = digits_folder(tmp_path / "digits", per_class=2)
    grey = next((root / "zero").glob("*.png"))
    with Image.open(grey) as image:
        image.convert("RGB").save(grey)
    message = _refused(root)
    assert message.startswith(f"{grey} is colour (mode RGB) but earlier images are not")
    assert "set data.image.channels=1 or 3" in message
    with caplog.at_level(logging.WARNING, logger="graft.data.image_folder"):
        x, _, _ = _load(root, channels=1)
    assert x.shape == (6, 1, 8, 8)
    assert "every image was converted to greyscale" in caplog.text


def test_different_sizes_are_refused_unless_size_is_set(tmp_path: Path) -> None:
    root = digits_folder(tmp_path / "digits", per_class=2)
    odd = next((root / "two").glob("*.png"))
    with Image.open(odd) as image:
        image.resize((10, 9)).save(odd)
    message = _refused(root)
    assert message.startswith(f"{odd} is 10 x 9 pixels, earlier images 8 x 8")
    assert "set data.image.size" in message
    assert _load(root, size=8)[0].shape == (6, 1, 8, 8)


def test_a_decompression_bomb_is_refused_before_it_is_decoded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = digits_folder(tmp_path / "digits", per_class=2)
    big = root / "one" / "big.png"
    Image.new("L", (300, 200)).save(big)  # a few hundred bytes declaring 60,000 pixels
    message = _refused(root, max_pixels=50_000)
    assert message.startswith(f"{big} declares 300 x 200 pixels, more than data.image.max_pixels")
    # beyond twice Pillow's own limit Pillow refuses at open: still one DatasetError
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20_000)
    assert _refused(root).startswith(f"{big} is not a readable image")


def test_image_size_must_be_positive() -> None:
    with pytest.raises(ValidationError, match="must be positive"):
        ImageConfig(size=[0, 8])
    assert ImageConfig(size=28).height_width() == (28, 28)
    assert ImageConfig(size=[20, 30]).height_width() == (20, 30)


def test_the_cli_refuses_a_corrupt_image_in_one_line(tmp_path: Path) -> None:
    root = digits_folder(tmp_path / "digits", per_class=2)
    (root / "zero" / "bad.jpg").write_bytes(b"\xff\xd8 not really")
    result = run_graft("run", "-p", "tiny", "--set", f"data.source={root}")
    assert_one_clear_error(result, f"{root}/zero/bad.jpg is not a readable image")


def test_a_missing_folder_is_named_with_what_the_source_may_be(tmp_path: Path) -> None:
    message = _refused(tmp_path / "no-such-folder")
    assert message == (
        f"{tmp_path / 'no-such-folder'} does not exist; give an image folder (one subfolder "
        "per class) or a .npz, .parquet or .csv file"
    )


def _encoded(fmt: str) -> bytes:
    pixels = (load_digits().images[0] * 16).clip(0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(np.kron(pixels, np.ones((4, 4), np.uint8)), "L").save(buffer, fmt)
    return buffer.getvalue()


VALID = {".png": _encoded("PNG"), ".jpg": _encoded("JPEG")}


@settings(
    max_examples=80,
    deadline=None,
    database=None,  # nothing written into the tree
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    suffix=st.sampled_from(sorted(VALID)),
    flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 7)), max_size=4),
    cut=st.one_of(st.none(), st.integers(0, 10**6)),
)
def test_a_damaged_image_is_read_or_refused_by_name(
    tmp_path: Path, suffix: str, flips: list[tuple[int, int]], cut: int | None
) -> None:
    """Bit flips and truncation anywhere in a PNG or JPEG (the header's declared size too):
    the folder reads, or one DatasetError names the damaged file; never another exception."""
    root = tmp_path / f"case-{uuid.uuid4().hex}"
    digits_folder(root, per_class=1)
    data = bytearray(VALID[suffix])
    for position, bit in flips:
        data[position % len(data)] ^= 1 << bit
    damaged = root / "one" / f"damaged{suffix}"
    damaged.write_bytes(bytes(data if cut is None else data[: cut % len(data)]))
    try:
        x, _, _ = _load(root, size=8, channels=1)
    except DatasetError as exc:
        assert str(exc).startswith(str(damaged)), str(exc)
    else:
        assert x.shape == (4, 1, 8, 8)
    finally:
        shutil.rmtree(root)
