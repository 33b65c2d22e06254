"""Per-worker resources (CPU, GPU) and SyncBatchNorm for multi-worker BN."""

import torch
from torch import nn

from graft.config import WorkerResources, load_config
from graft.nn.models import ModelSpec, build_model
from graft.train.workers import sync_batch_norm


def test_cpu_only_workers_ask_ray_for_cpus_only() -> None:
    assert WorkerResources().ray_resources() == {"CPU": 1.0}


def test_gpu_workers_ask_for_their_gpu_share() -> None:
    assert WorkerResources(cpus=4, gpus=0.5).ray_resources() == {"CPU": 4.0, "GPU": 0.5}


def test_a_tune_trial_takes_its_own_actor_cpu_off_the_workers() -> None:
    assert WorkerResources(cpus=1).ray_resources(cpu_discount=0.005) == {"CPU": 0.995}
    # never down to zero: Ray would then place unlimited workers on a node
    assert WorkerResources(cpus=0.01).ray_resources(cpu_discount=0.01)["CPU"] > 0


def test_resources_come_from_the_config_per_stage() -> None:
    config = load_config(
        preset="tiny", overrides=["finetune.resources.gpus=1", "finetune.resources.cpus=8"]
    )
    assert config.finetune.resources.ray_resources() == {"CPU": 8.0, "GPU": 1.0}
    assert config.pretrain.resources.ray_resources() == {"CPU": 1.0}


def _bn_model() -> nn.Module:
    config = load_config(preset="tiny", overrides=["model.batch_norm.enabled=true"])
    spec = ModelSpec(
        input_shape=[64],
        num_classes=10,
        model=config.model.model_dump(mode="json"),
        mean=[0.0] * 64,
        std=[1.0] * 64,
    )
    return build_model(spec)


def test_sync_batch_norm_converts_every_bn_layer_on_gpu_workers_with_unchanged_keys() -> None:
    model = _bn_model()
    keys = list(model.state_dict())
    plain = sum(isinstance(m, nn.BatchNorm1d) for m in model.modules())
    assert plain > 0
    converted = sync_batch_norm(model, torch.device("cuda"), sync=True)
    assert sum(isinstance(m, nn.SyncBatchNorm) for m in converted.modules()) == plain
    assert not any(type(m) is nn.BatchNorm1d for m in converted.modules())
    assert list(converted.state_dict()) == keys  # checkpoints load into the plain model


def test_sync_batch_norm_leaves_cpu_workers_and_opt_outs_alone() -> None:
    model = _bn_model()
    assert sync_batch_norm(model, torch.device("cpu"), sync=True) is model
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in model.modules())
    model = _bn_model()
    sync_batch_norm(model, torch.device("cuda"), sync=False)
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in model.modules())
