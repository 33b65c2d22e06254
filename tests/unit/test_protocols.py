"""Evaluation protocols (holdout, K-fold, iterated K-fold, auto) and the finetune stage's
cross-validated estimate, trained in process against a SQLite MLflow in tmp_path."""

import itertools
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from local_tracking import tiny_config_tracked_in
from mlflow.tracking import MlflowClient
from sklearn.datasets import load_digits

from graft import stages
from graft.config import GraftConfig, ProtocolConfig, load_config
from graft.data.prepare import prepare_dataset
from graft.data.streaming_read import load_streamed_split
from graft.errors import ConfigError, DatasetError
from graft.evaluate.finetune_cv import CV_FILE, check_pooled_rows_fit, cross_validate_finetune
from graft.evaluate.protocols import (
    FoldData,
    ProtocolResult,
    holdout_split,
    iterated_kfold,
    linear_probe,
    run_protocol,
    stratified_kfold,
)
from graft.io import tracking
from graft.train.in_process import FinetuneFoldTrainer, FinetuneStart, state_sha
from graft.train.request import FitRequest
from graft.train.stage_requests import finetune_request


def _labels(n: int = 103, classes: int = 3, seed: int = 0) -> np.ndarray:
    # unequal class sizes and n % k != 0, so the remainder rows and rounding are exercised
    return np.random.default_rng(seed).choice(classes, size=n, p=[0.5, 0.3, 0.2][:classes])


def _assignment(folds: list, n: int) -> np.ndarray:
    fold_of = np.full(n, -1)
    for fold in folds:
        fold_of[fold.val] = fold.index
    return fold_of


# ----------------------------------------------------------------------------- folds


def test_kfold_validates_every_row_exactly_once_including_the_remainder() -> None:
    y = _labels(103)
    folds = stratified_kfold(y, k=5, seed=1)
    assert len(folds) == 5
    validated = np.concatenate([f.val for f in folds])
    assert sorted(validated.tolist()) == list(range(103))  # once each, remainder included
    sizes = [len(f.val) for f in folds]
    assert max(sizes) - min(sizes) <= 1
    for fold in folds:
        assert not set(fold.train.tolist()) & set(fold.val.tolist())
        assert len(fold.train) + len(fold.val) == 103


def test_kfold_folds_are_stratified() -> None:
    y = _labels(103)
    total = Counter(y.tolist())
    for fold in stratified_kfold(y, k=4, seed=3):
        counts = Counter(y[fold.val].tolist())
        for label, n in total.items():
            assert n // 4 <= counts[label] <= -(-n // 4)  # within rounding of n/k


def test_iterated_kfold_reshuffles_each_repeat_and_is_deterministic_for_a_seed() -> None:
    y = _labels(90)
    folds = iterated_kfold(y, k=3, repeats=4, seed=7)
    assert len(folds) == 12
    assignments = []
    for repeat in range(4):
        per_repeat = [f for f in folds if f.repeat == repeat]
        validated = np.concatenate([f.val for f in per_repeat])
        assert sorted(validated.tolist()) == list(range(90))
        assignments.append(_assignment(per_repeat, 90))
    # different repeats put rows in different folds (different shuffles)
    for a in range(4):
        for b in range(a + 1, 4):
            assert not np.array_equal(assignments[a], assignments[b])
    again = iterated_kfold(y, k=3, repeats=4, seed=7)
    assert all(np.array_equal(f.val, g.val) for f, g in zip(folds, again, strict=True))
    other = iterated_kfold(y, k=3, repeats=4, seed=8)
    assert not all(np.array_equal(f.val, g.val) for f, g in zip(folds, other, strict=True))


def test_holdout_split_sizes_and_stratification() -> None:
    y = np.array([0] * 80 + [1] * 20)
    by_count = holdout_split(y, 25, seed=0)
    assert len(by_count.val) == 25 and len(by_count.train) == 75
    by_fraction = holdout_split(y, 0.2, seed=0)
    assert len(by_fraction.val) == 20
    assert Counter(y[by_fraction.val].tolist()) == {0: 16, 1: 4}
    assert not np.array_equal(holdout_split(y, 0.2, seed=1).val, by_fraction.val)


# ----------------------------------------------------------------------------- running


def test_run_protocol_reports_per_fold_scores_and_their_mean_and_std() -> None:
    y = _labels(60)
    x = np.arange(60, dtype=np.float64).reshape(-1, 1)
    seen: list[FoldData] = []

    def score(data: FoldData) -> float:
        seen.append(data)
        # a score that differs per fold: the mean row id of the validation rows
        return float(data.x_val.mean()) / 60

    config = ProtocolConfig(name="iterated_kfold", folds=4, repeats=3)
    result = run_protocol(x, y, config, score, seed=5, holdout_val_size=0.2)
    assert result.protocol == "iterated_kfold" and result.fits == 12 and len(seen) == 12
    scores = np.array([f.score for f in result.folds])
    assert result.mean == pytest.approx(scores.mean(), abs=1e-12)
    assert result.std == pytest.approx(scores.std(), abs=1e-12)
    assert result.std > 0
    for repeat in range(3):
        mine = [f.score for f in result.folds if f.repeat == repeat]
        assert result.repeat_means[repeat] == pytest.approx(np.mean(mine), abs=1e-12)
    for data in seen:  # the callable gets the fold's own rows, none of its val rows in train
        assert not set(data.x_train[:, 0].tolist()) & set(data.x_val[:, 0].tolist())
        assert data.seed == 5


def _digits_300() -> tuple[np.ndarray, np.ndarray]:
    digits = load_digits()
    return digits.data[:300], digits.target[:300]


def test_auto_picks_kfold_on_small_data_with_a_shuffle_dependent_holdout() -> None:
    x, y = _digits_300()
    config = ProtocolConfig(name="auto", folds=3, probe_max_std=0.005, min_val_rows=1)
    probe = linear_probe(max_iter=200, max_rows=10_000)
    result = run_protocol(x, y, config, probe, seed=0, holdout_val_size=0.2, probe_score=probe)
    assert result.probe is not None
    assert result.probe.std > 0.005
    assert result.protocol == "kfold" and result.fits == 3
    assert "holdout unreliable" in result.reason and "std" in result.reason


def test_auto_keeps_holdout_on_large_easy_data_and_flags_a_small_val_set() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=20_000)
    x = rng.normal(size=(20_000, 2)) + 8.0 * y[:, None]  # two far-apart blobs
    probe = linear_probe(max_iter=100, max_rows=20_000)
    config = ProtocolConfig(name="auto", min_val_rows=1000)
    result = run_protocol(x, y, config, probe, seed=0, holdout_val_size=0.2)
    assert result.probe is not None and result.probe.val_rows == 4000
    assert result.probe.std <= config.probe_max_std
    assert result.protocol == "holdout" and result.fits == 1
    assert result.reason.startswith("holdout reliable")
    strict = ProtocolConfig(name="auto", min_val_rows=5000, auto_picks="iterated_kfold")
    flagged = run_protocol(x, y, strict, probe, seed=0, holdout_val_size=0.2)
    assert flagged.protocol == "iterated_kfold"
    assert "4000 rows < min_val_rows 5000" in flagged.reason


# ----------------------------------------------------------------------------- config


def test_protocol_defaults_to_holdout() -> None:
    assert GraftConfig().evaluate.protocol.name == "holdout"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("evaluate.protocol.folds=1", "evaluate.protocol.folds"),
        ("evaluate.protocol.repeats=0", "evaluate.protocol.repeats"),
        ("evaluate.protocol.name=loo", "evaluate.protocol.name"),
        ("evaluate.protocol.probe_splits=1", "evaluate.protocol.probe_splits"),
        ("evaluate.protocol.probe_max_std=0", "evaluate.protocol.probe_max_std"),
        ("evaluate.protocol.min_val_rows=0", "evaluate.protocol.min_val_rows"),
    ],
)
def test_protocol_config_refuses_nonsense(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(preset="tiny", overrides=[override])


def test_protocol_config_refuses_plain_kfold_as_iterated_and_too_many_models() -> None:
    with pytest.raises(ConfigError, match="repeats=1 is plain K-fold"):
        load_config(
            preset="tiny",
            overrides=["evaluate.protocol.name=iterated_kfold", "evaluate.protocol.repeats=1"],
        )
    with pytest.raises(ConfigError, match=r"100 models .* > max_models=50"):
        load_config(
            preset="tiny",
            overrides=[
                "evaluate.protocol.name=iterated_kfold",
                "evaluate.protocol.folds=10",
                "evaluate.protocol.repeats=10",
            ],
        )
    # the guard is about what would run: holdout trains nothing extra whatever the counts
    load_config(preset="tiny", overrides=["evaluate.protocol.folds=60"])


# ----------------------------------------------------------------------------- finetune stage


def _finetune_setup(
    tmp_path: Path, untrained_model_dir: Callable[..., Path], *overrides: str
) -> tuple[GraftConfig, FitRequest]:
    config = tiny_config_tracked_in(
        tmp_path,
        # the backbone is random (not pretrained), so the "all" phase does the learning
        "finetune.phases=[{trainable: head, epochs: 2}, {trainable: all, epochs: 20}]",
        *overrides,
    )
    dataset = tmp_path / "data"
    prepare_dataset(config.data, config.seed, dataset)
    # a "pretrained" source model: random weights are enough to check the protocol's wiring
    pretrained = untrained_model_dir(config, dataset, tmp_path / "pretrained")
    request = finetune_request(config, str(dataset), str(pretrained), tmp_path / "scratch", None)
    return config, request


def _cross_validate(
    config: GraftConfig, request: FitRequest, out: Path, run_id: str
) -> ProtocolResult:
    """What the finetune stage runs: the in-process finetune recipe trains each fold."""
    trainer = FinetuneFoldTrainer(FinetuneStart.from_request(request))
    splits = (request.train_path, request.val_path)
    return cross_validate_finetune(config, trainer, splits, out, run_id)


@pytest.mark.timeout(240)
def test_finetune_kfold_logs_cv_metrics_with_a_fresh_model_per_fold(
    tmp_path: Path, untrained_model_dir: Callable[..., Path]
) -> None:
    config, request = _finetune_setup(
        tmp_path, untrained_model_dir, "evaluate.protocol.name=kfold", "evaluate.protocol.folds=3"
    )
    parent = tracking.start_pipeline_run(config, "unit")
    with tracking.stage_run(config, parent, "transfer-finetune") as run_id:
        result = _cross_validate(config, request, tmp_path / "model", run_id)

    client = MlflowClient(tracking_uri=config.resolved_tracking_uri())
    run = client.get_run(run_id)
    metrics = run.data.metrics
    assert run.data.tags["cv_protocol"] == "kfold"
    assert metrics["cv_folds"] == 3 and metrics["cv_fits"] == 3
    history = client.get_metric_history(run_id, "cv_fold_val_accuracy")
    per_fold = [m.value for m in sorted(history, key=lambda m: m.step)]
    assert len(per_fold) == 3
    # the reported score is the mean (and std) of the fold scores, recomputed from MLflow
    assert metrics["cv_mean_val_accuracy"] == pytest.approx(np.mean(per_fold), abs=1e-9)
    assert metrics["cv_std_val_accuracy"] == pytest.approx(np.std(per_fold), abs=1e-9)
    assert metrics["cv_mean_val_accuracy"] == pytest.approx(result.mean, abs=1e-9)

    report = json.loads((tmp_path / "model" / CV_FILE).read_text())
    assert report["protocol"] == "kfold" and report["fits"] == 3
    with np.load(request.train_path) as train, np.load(request.val_path) as val:
        pooled = len(train["y"]) + len(val["y"])
    assert report["pooled_rows"] == pooled
    assert sum(f["val_rows"] for f in report["folds"]) == pooled  # each row validated once
    # fresh model per fold: every fold starts from the request's starting weights, never from
    # the previous fold's trained weights, and every fold's training moved them
    records = report["fold_records"]
    start_sha = state_sha(FinetuneStart.from_request(request).model.fresh_model())
    assert [r["init_sha"] for r in records] == [start_sha] * 3
    assert all(r["final_sha"] != start_sha for r in records)
    assert len({r["final_sha"] for r in records}) == 3
    for previous, current in itertools.pairwise(records):
        assert current["init_sha"] != previous["final_sha"]
    # the folds' models learned the 3-vs-8 task (chance is 0.5)
    assert metrics["cv_mean_val_accuracy"] > 0.8
    artifacts = [a.path for a in client.list_artifacts(run_id, "cv")]
    assert "cv/cv.json" in artifacts


@pytest.mark.timeout(240)
def test_finetune_iterated_kfold_trains_p_times_k_models(
    tmp_path: Path, untrained_model_dir: Callable[..., Path]
) -> None:
    config, request = _finetune_setup(
        tmp_path,
        untrained_model_dir,
        "evaluate.protocol.name=iterated_kfold",
        "evaluate.protocol.folds=2",
        "evaluate.protocol.repeats=2",
        "finetune.phases=[{trainable: head, epochs: 1}]",
    )
    parent = tracking.start_pipeline_run(config, "unit")
    with tracking.stage_run(config, parent, "transfer-finetune") as run_id:
        result = _cross_validate(config, request, tmp_path / "model", run_id)
    metrics = MlflowClient(tracking_uri=config.resolved_tracking_uri()).get_run(run_id).data
    assert result.fits == 4 and metrics.metrics["cv_fits"] == 4
    assert len(result.repeat_means) == 2
    assert metrics.tags["cv_protocol"] == "iterated_kfold"


# ----------------------------------------------------------------------------- streamed


def _digits_parquet(folder: Path) -> Path:
    """scikit-learn's digits as two Parquet files (64 float features, a ``label`` column)."""
    import pandas as pd

    digits = load_digits()
    frame = pd.DataFrame(digits.data.astype(np.float32), columns=[f"p{i}" for i in range(64)])
    frame["label"] = digits.target
    folder.mkdir(parents=True)
    for index, part in enumerate(np.array_split(np.arange(len(frame)), 2)):
        frame.iloc[part].to_parquet(folder / f"part-{index}.parquet", row_group_size=200)
    return folder


@pytest.mark.timeout(240)
def test_finetune_kfold_pools_the_streamed_target_rows(
    tmp_path: Path, untrained_model_dir: Callable[..., Path]
) -> None:
    source = _digits_parquet(tmp_path / "digits")
    config, request = _finetune_setup(
        tmp_path,
        untrained_model_dir,
        f"data.source={source}",
        "data.loader=streaming",
        "data.transfer={target_classes: [3, 8], target_train_size: 60}",  # the tiny preset's
        "evaluate.protocol.name=kfold",
        "evaluate.protocol.folds=3",
    )
    assert request.stream is not None and request.train_path.endswith(".manifest.parquet")
    parent = tracking.start_pipeline_run(config, "unit")
    with tracking.stage_run(config, parent, "transfer-finetune") as run_id:
        result = _cross_validate(config, request, tmp_path / "model", run_id)

    report = json.loads((tmp_path / "model" / CV_FILE).read_text())
    paths = (request.train_path, request.val_path)
    splits = [load_streamed_split(Path(p), tmp_path / "data") for p in paths]
    pooled = sum(len(y) for _, y in splits)
    assert report["protocol"] == "kfold" and report["fits"] == 3
    assert report["pooled_rows"] == pooled == 60 + len(splits[1][1])  # target_train_size 60
    assert sum(f["val_rows"] for f in report["folds"]) == pooled  # each row validated once
    # the folds' models learned the 3-vs-8 task from the decoded rows (chance is 0.5)
    assert result.mean > 0.8


def test_a_streamed_target_task_too_large_to_pool_is_refused_before_the_fit(
    tmp_path: Path, untrained_model_dir: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    source = _digits_parquet(tmp_path / "digits")
    config, _ = _finetune_setup(
        tmp_path,
        untrained_model_dir,
        f"data.source={source}",
        "data.loader=streaming",
        "data.transfer={target_classes: [3, 8], target_train_size: 60}",
        "evaluate.protocol.name=kfold",
    )
    # 60 train + the val rows x 64 features x 4 bytes x 2 copies is more than 10 KiB
    monkeypatch.setattr("graft.evaluate.finetune_cv.memory_headroom", lambda: 10 * 1024)
    monkeypatch.setattr("graft.stages.training.ensure_ray", lambda _: None)

    def no_fit(*_: object) -> None:
        raise AssertionError("the fit started before the k-fold protocol's rows were checked")

    monkeypatch.setattr("graft.stages.training.fit", no_fit)
    parent = tracking.start_pipeline_run(config, "unit")
    with pytest.raises(DatasetError, match=r"evaluate\.protocol\.name=holdout") as refused:
        stages.finetune.run(
            config, str(tmp_path / "data"), str(tmp_path / "pretrained"), str(tmp_path), parent
        )
    assert "data.transfer.target_train_size" in str(refused.value)
    # the in-memory pooling is not refused by this check (data-prep held those rows already)
    (tmp_path / "memory").mkdir()
    memory_config, memory_request = _finetune_setup(tmp_path / "memory", untrained_model_dir)
    check_pooled_rows_fit(memory_config, (memory_request.train_path, memory_request.val_path))
