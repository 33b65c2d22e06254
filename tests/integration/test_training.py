"""Ray Train on a real local Ray instance: DDP fits, checkpoint resume, frozen layers."""

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from graft.config import GraftConfig, load_config
from graft.io.ray_runtime import TrainStorage
from graft.nn.models import build_model
from graft.train.fit import fit
from graft.train.model_dir import load_checkpoint_model
from graft.train.objectives import objective_loss
from graft.train.request import FitRun
from graft.train.stage_requests import finetune_request, pretrain_request

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]


def _config(tmp: Path, *overrides: str) -> GraftConfig:
    return load_config(preset="tiny", overrides=[f"work_dir={tmp}", *overrides])


def _pretrain(config: GraftConfig, dataset: str, name: str, out: Path, **request_changes: object):
    request = pretrain_request(config, dataset, None).model_copy(update=request_changes)
    return fit(
        request,
        FitRun(
            num_workers=2,
            storage=TrainStorage(str((config.work_path / "ray").resolve())),
            run_name=name,
            output_dir=out,
            max_failures=1,
            num_to_keep=2,
        ),
    )


def test_two_worker_fit_learns(ray_local: None, dataset: str, tmp_path: Path) -> None:
    config = _config(tmp_path, "pretrain.epochs=3", "pretrain.early_stopping.enabled=false")
    result = _pretrain(config, dataset, "learns", tmp_path / "model")
    history = result.history
    assert [h["epoch"] for h in history] == [1.0, 2.0, 3.0]
    assert history[-1]["train_loss"] < 0.5 * history[0]["train_loss"]
    assert history[-1]["val_accuracy"] > 0.8


def test_killed_worker_resumes_from_checkpoint_and_matches_uninterrupted(
    ray_local: None, dataset: str, tmp_path: Path
) -> None:
    """A worker crash at epoch 2 restarts the group from the epoch-2 checkpoint; the epoch
    counter continues and, in deterministic mode, the weights equal an uninterrupted run."""
    config = _config(tmp_path, "pretrain.epochs=3", "pretrain.early_stopping.enabled=false")
    clean = _pretrain(config, dataset, "clean", tmp_path / "clean")
    crashed = _pretrain(config, dataset, "crashed", tmp_path / "crashed", fail_at_epoch=2)
    assert (Path(dataset) / "source" / ".failed-2").exists()
    (Path(dataset) / "source" / ".failed-2").unlink()
    assert [h["epoch"] for h in crashed.history] == [1.0, 2.0, 3.0]
    clean_model, _ = load_checkpoint_model(clean.model_dir)
    resumed_model, _ = load_checkpoint_model(crashed.model_dir)
    for (name, a), (_, b) in zip(
        clean_model.state_dict().items(), resumed_model.state_dict().items(), strict=True
    ):
        assert torch.allclose(a, b, atol=1e-6), name


def test_head_phase_keeps_backbone_weights_and_bn_buffers_bit_identical(
    ray_local: None, dataset: str, tmp_path: Path
) -> None:
    config = _config(
        tmp_path,
        "model.batch_norm.enabled=true",
        "pretrain.epochs=2",
        "finetune.num_workers=2",
        "finetune.phases=[{trainable: head, epochs: 2}]",
    )
    pre = _pretrain(config, dataset, "bn-pre", tmp_path / "pre")
    source, _ = load_checkpoint_model(pre.model_dir)
    source_state = copy.deepcopy(source.state_dict())
    request = finetune_request(config, dataset, pre.model_dir, tmp_path / "scratch", None)
    tuned = fit(
        request,
        FitRun(
            num_workers=2,
            storage=TrainStorage(str((config.work_path / "ray").resolve())),
            run_name="bn-head",
            output_dir=tmp_path / "finetuned",
            max_failures=0,
            num_to_keep=1,
        ),
    )
    model, _ = load_checkpoint_model(tuned.model_dir)
    state = model.state_dict()
    backbone_keys = [k for k in state if k.startswith(("backbone.", "stem."))]
    assert any("running_mean" in k for k in backbone_keys)
    for key in backbone_keys:
        assert torch.equal(state[key], source_state[key]), key
    assert not torch.equal(state["head.weight"][:2], source_state["head.weight"][:2])
    # the pretrained model on disk was not modified
    again, _ = load_checkpoint_model(pre.model_dir)
    for key, value in again.state_dict().items():
        assert torch.equal(value, source_state[key])


def test_cached_bottleneck_features_run_the_trunk_once_and_train_the_same_head(
    ray_local: None, dataset: str, tmp_path: Path
) -> None:
    settings = (
        "model.batch_norm.enabled=true",
        "pretrain.epochs=2",
        "finetune.early_stopping.enabled=false",
        "finetune.phases=[{trainable: head, epochs: 3}]",
    )
    config = _config(tmp_path, *settings)
    pre = _pretrain(config, dataset, "cache-pre", tmp_path / "pre")
    heads, histories = {}, {}
    for cached in (False, True):
        run = _config(tmp_path, *settings, f"finetune.cache_bottleneck_features={cached}")
        request = finetune_request(run, dataset, pre.model_dir, tmp_path / f"s-{cached}", None)
        tuned = fit(
            request,
            FitRun(
                num_workers=2,
                storage=TrainStorage(str((run.work_path / "ray").resolve())),
                run_name=f"cache-{cached}",
                output_dir=tmp_path / f"finetuned-{cached}",
                max_failures=0,
                num_to_keep=1,
            ),
        )
        model, _ = load_checkpoint_model(tuned.model_dir)
        heads[cached] = model.head.state_dict()
        histories[cached] = [m["trunk_examples"] for m in tuned.history]
    # the trunk ran once over the training set (each worker half of it), then never again
    rows = len(np.load(Path(dataset) / "target" / "train.npz")["y"])
    assert histories[True] == [float(-(-rows // 2)), 0.0, 0.0]
    # without the cache it runs on every batch of every epoch
    assert all(n > 0 for n in histories[False])
    assert sum(histories[False]) > histories[True][0]
    # frozen BN in eval mode and no dropout: the cached features are the trunk's outputs, so
    # the head learns the same weights (up to float summation order)
    for key, value in heads[False].items():
        assert torch.allclose(value, heads[True][key], atol=1e-5), key


def test_autoencoder_pretrain_under_ddp_then_finetune_reuses_the_encoder(
    ray_local: None, dataset: str, tmp_path: Path
) -> None:
    config = _config(
        tmp_path,
        "pretrain.objective=autoencoder",
        "pretrain.epochs=4",
        "finetune.phases=[{trainable: head, epochs: 2}]",
    )
    pre = _pretrain(config, dataset, "ae-pre", tmp_path / "ae")
    losses = [h["val_loss"] for h in pre.history]
    assert "val_accuracy" not in pre.history[0]  # nothing to score without labels
    encoder, spec = load_checkpoint_model(pre.model_dir)
    assert spec.objective == "autoencoder"
    untrained = build_model(spec)
    val = np.load(Path(dataset) / "source" / "val.npz")
    x = torch.from_numpy(val["x"].astype(np.float32))
    with torch.no_grad():
        start = float(objective_loss(untrained, untrained(x), x, x, "autoencoder"))
    assert min(losses) <= 0.5 * start  # the reconstruction error at least halved
    request = finetune_request(config, dataset, pre.model_dir, tmp_path / "scratch", None)
    tuned = fit(
        request,
        FitRun(
            num_workers=1,
            storage=TrainStorage(str((config.work_path / "ray").resolve())),
            run_name="ae-finetune",
            output_dir=tmp_path / "finetuned",
            max_failures=0,
            num_to_keep=1,
        ),
    )
    classifier, target_spec = load_checkpoint_model(tuned.model_dir)
    assert target_spec.objective == "classify" and classifier.head.out_features == 2
    assert tuned.history[-1]["val_accuracy"] > 0.5
    for key, value in encoder.backbone.state_dict().items():  # head phase: encoder frozen
        assert torch.equal(classifier.backbone.state_dict()[key], value), key


def test_a_fits_input_files_reach_workers_through_the_object_store(
    ray_local: None, dataset: str, tmp_path: Path
) -> None:
    """On a cluster a worker on another node cannot read the driver's disk: the inputs it
    opens come from Ray's object store, even once the driver's files are gone."""
    import shutil

    from graft.train.request import ship_inputs
    from graft.train.rows import load_split_rows

    local_copy = tmp_path / "dataset"
    shutil.copytree(dataset, local_copy)
    request = pretrain_request(_config(tmp_path), str(local_copy), None).model_copy(
        update={"init_weights_path": str(tmp_path / "init.pt")}
    )
    torch.save({"w": torch.arange(3)}, request.init_weights_path)
    shipped = ship_inputs(request)
    shutil.rmtree(local_copy)
    Path(request.init_weights_path).unlink()

    opened = shipped.open()
    assert set(opened) == {request.train_path, request.val_path, request.init_weights_path}
    train = load_split_rows(opened[request.train_path])
    expected = load_split_rows(str(Path(dataset) / "source" / "train.npz"))
    assert torch.equal(train.tensors[0], expected.tensors[0])
    assert torch.equal(train.tensors[1], expected.tensors[1])
    assert torch.equal(torch.load(opened[request.init_weights_path])["w"], torch.arange(3))
