"""Read an image folder: one subfolder per class, JPEG or PNG files of any size.

The class names are the subfolder names, sorted; label ``i`` is the ``i``-th name. Every image
becomes one C x H x W float32 row of pixel values 0-255, like the built-in image datasets, so
the models and the checks downstream see no difference. Each refusal names the file or folder
as the user gave it (under the s3:// prefix for a downloaded folder) and says what to change.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from graft.config.data import ImageConfig
from graft.data.intake_limits import check_fits_in_memory
from graft.errors import DatasetError

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# Pillow modes with one colour channel (alpha, where present, is dropped on conversion)
GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
# what Pillow raises on a file it cannot identify, a truncated stream or a broken chunk
UNREADABLE = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


@dataclass(frozen=True)
class ImageFile:
    path: Path | io.BytesIO  # a local file, or the bytes of one read from elsewhere
    shown: str  # the name the user knows: their folder (or s3:// prefix) and the relative path
    label: int


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def list_image_files(root: Path, shown: str) -> tuple[list[str], list[ImageFile]]:
    """The class names (sorted subfolder names) and every image under them, sorted.

    Hidden files and folders (a leading dot: .DS_Store, .ipynb_checkpoints) are skipped; any
    other file that is not a .png/.jpg/.jpeg, or that lies outside a class folder, is refused."""
    stray = sorted(p.name for p in root.iterdir() if p.is_file() and not p.name.startswith("."))
    if stray:
        raise DatasetError(
            f"{shown}/{stray[0]} is a file at the top of the image folder, where only class "
            "folders belong; move it into a class folder or out of the folder"
        )
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise DatasetError(
            f"{shown} holds {len(classes)} class folder(s) {classes}; an image folder needs one "
            "subfolder per class and at least 2 classes"
        )
    files: list[ImageFile] = []
    for label, name in enumerate(classes):
        found = sorted(p for p in (root / name).rglob("*") if p.is_file() and not _hidden(p, root))
        for path in found:
            rel = path.relative_to(root).as_posix()
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                raise DatasetError(
                    f"{shown}/{rel} is not a .png/.jpg/.jpeg image; remove it or convert it"
                )
            files.append(ImageFile(path, f"{shown}/{rel}", label))
        if not found:
            raise DatasetError(
                f"{shown}/{name} is an empty class folder; add its images or remove the folder"
            )
    return classes, files


def _unreadable(file: ImageFile, exc: BaseException) -> DatasetError:
    # Pillow's message names the local copy, which the user never heard of
    problem = str(exc).replace(str(file.path), file.shown)
    return DatasetError(f"{file.shown} is not a readable image ({problem}); replace or remove it")


def _open(file: ImageFile, max_pixels: int) -> Image.Image:
    """The image with its header read and its pixel count checked, its data not decoded yet."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(file.path)
    except (*UNREADABLE, Image.DecompressionBombWarning) as exc:
        raise _unreadable(file, exc) from None
    width, height = image.size
    if width * height > max_pixels:
        image.close()
        raise DatasetError(
            f"{file.shown} declares {width} x {height} pixels, more than data.image.max_pixels "
            f"({max_pixels}); shrink the image, or raise the limit if it is genuine"
        )
    return image


# EXIF orientations that turn the stored image by 90 or 270 degrees (width and height swap)
_QUARTER_TURNS = frozenset({5, 6, 7, 8})
_ORIENTATION_TAG = 0x0112


def _upright_size(image: Image.Image, file: ImageFile) -> tuple[int, int]:
    """(width, height) as the image is shown: a phone's JPEG stores the sensor's orientation
    and an EXIF tag saying how to turn it, and every viewer (and ``exif_transpose``) obeys it.
    A PNG's EXIF is read only when its header carried one: looking further decodes the file."""
    width, height = image.size
    if image.format == "PNG" and "exif" not in image.info:
        return width, height
    try:
        orientation = image.getexif().get(_ORIENTATION_TAG, 1)
    except UNREADABLE as exc:
        raise _unreadable(file, exc) from None
    return (height, width) if orientation in _QUARTER_TURNS else (width, height)


def _channels(mode: str) -> int:
    return 1 if mode in GREY_MODES else 3


def _target_shape(first: ImageFile, config: ImageConfig) -> tuple[int, int, int]:
    """(channels, height, width) of every row: from the config, else from the first image."""
    with _open(first, config.max_pixels) as image:
        width, height = _upright_size(image, first)
        channels = config.channels or _channels(image.mode)
    height, width = config.height_width() or (height, width)
    return channels, height, width


def _pixels(
    file: ImageFile, shape: tuple[int, int, int], config: ImageConfig
) -> tuple[np.ndarray, str]:
    """One decoded image as C x H x W float32, converted and resized to ``shape``, and the
    Pillow mode it had in the file."""
    channels, height, width = shape
    with _open(file, config.max_pixels) as image:
        if config.channels is None and _channels(image.mode) != channels:
            raise DatasetError(
                f"{file.shown} is {'greyscale' if channels == 3 else 'colour'} (mode "
                f"{image.mode}) but earlier images are not; the folder mixes greyscale and "
                "colour: set data.image.channels=1 or 3 to convert every image to one"
            )
        upright = _upright_size(image, file)
        if config.height_width() is None and upright != (width, height):
            raise DatasetError(
                f"{file.shown} is {upright[0]} x {upright[1]} pixels, earlier images "
                f"{width} x {height}; set data.image.size (e.g. {height} or [{height}, {width}]) "
                "to resize every image to one size"
            )
        mode = image.mode
        try:
            image.load()
            converted = ImageOps.exif_transpose(image).convert("L" if channels == 1 else "RGB")
            if converted.size != (width, height):
                converted = converted.resize((width, height), Image.Resampling.BILINEAR)
        except UNREADABLE as exc:
            raise _unreadable(file, exc) from None
    array = np.asarray(converted, dtype=np.float32)
    return (array[None] if channels == 1 else np.moveaxis(array, -1, 0)), mode


def decode_image(
    data: bytes, shown: str, shape: tuple[int, int, int], config: ImageConfig
) -> tuple[np.ndarray, str]:
    """One image's bytes as C x H x W float32 converted to ``shape`` (as
    :func:`read_image_folder` decodes a file), and its Pillow mode: for sources that are read
    file by file and never as one local folder (``data.loader: streaming``)."""
    return _pixels(ImageFile(io.BytesIO(data), shown, -1), shape, config)


def target_shape(data: bytes, shown: str, config: ImageConfig) -> tuple[int, int, int]:
    """(channels, height, width) every image becomes: the config's, else the first image's."""
    return _target_shape(ImageFile(io.BytesIO(data), shown, -1), config)


def read_image_folder(
    root: Path, shown: str, config: ImageConfig
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(x as N x C x H x W float32, y as int64, class names) of the folder ``root``."""
    classes, files = list_image_files(root, shown)
    shape = _target_shape(files[0], config)
    check_fits_in_memory(shown, 0, len(files) * int(np.prod(shape)))
    x = np.empty((len(files), *shape), dtype=np.float32)
    modes: Counter[str] = Counter()
    for row, file in enumerate(files):
        x[row], mode = _pixels(file, shape, config)
        modes[mode] += 1
    if len({_channels(mode) for mode in modes}) > 1:  # only with data.image.channels set
        logger.warning(
            "%s mixes image modes %s; every image was converted to %s (data.image.channels=%d)",
            shown,
            dict(modes),
            "greyscale" if shape[0] == 1 else "RGB",
            shape[0],
        )
    y = np.array([file.label for file in files], dtype=np.int64)
    logger.info(
        "%s: %d images in %d classes, read as %d x %d x %d", shown, len(files), len(classes), *shape
    )
    return x, y, classes
