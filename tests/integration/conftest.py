"""Fixtures shared by the Ray training tests: one local Ray and one tiny dataset per module."""

from collections.abc import Iterator

import pytest

from graft.config import load_config
from graft.data.prepare import prepare_dataset
from graft.io.ray_runtime import ensure_ray, shutdown_ray


@pytest.fixture(scope="module")
def ray_local() -> Iterator[None]:
    ensure_ray(load_config(preset="tiny").ray)
    yield
    shutdown_ray()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> str:
    config = load_config(preset="tiny")
    out = tmp_path_factory.mktemp("dataset")
    prepare_dataset(config.data, config.seed, out)
    return str(out)
