"""Virtual epochs (ML Design Patterns, S0-21) and the linear LR scaling rule, in exact numbers."""

from __future__ import annotations

import pytest

from graft.errors import ConfigError
from graft.train.budget import linear_scaled_lr, virtual_epoch_budget


def test_book_numbers_batch_100() -> None:
    plan = virtual_epoch_budget(1_000_000, 14.3, per_worker_batch=100, num_checkpoints=15)
    assert plan.global_batch == 100
    assert plan.steps_per_virtual_epoch == 9_533
    assert plan.total_steps == 142_995
    assert plan.examples_seen == 14_299_500
    assert plan.examples_budget == 14_300_000
    assert plan.examples_lost_to_flooring == 500  # less than one batch per checkpoint
    assert plan.examples_per_virtual_epoch == 953_300


def test_book_numbers_batch_50_keeps_the_example_count() -> None:
    plan = virtual_epoch_budget(1_000_000, 14.3, per_worker_batch=50, num_checkpoints=15)
    assert plan.steps_per_virtual_epoch == 19_066
    assert plan.total_steps == 285_990
    assert plan.examples_seen == 14_299_500
    # halving the batch doubles the steps; the examples shown stay within one global batch
    reference = virtual_epoch_budget(1_000_000, 14.3, per_worker_batch=100, num_checkpoints=15)
    assert abs(plan.examples_seen - reference.examples_seen) < 100


@pytest.mark.parametrize(("workers", "batch"), [(1, 100), (2, 50), (4, 25), (5, 20), (10, 10)])
def test_examples_per_checkpoint_invariant_to_worker_count(workers: int, batch: int) -> None:
    plan = virtual_epoch_budget(
        1_000_000, 14.3, per_worker_batch=batch, num_workers=workers, num_checkpoints=15
    )
    assert plan.global_batch == 100
    assert plan.steps_per_virtual_epoch == 9_533
    assert plan.examples_per_virtual_epoch == 953_300
    assert plan.examples_seen == 14_299_500


def test_more_workers_at_fixed_per_worker_batch_means_fewer_steps_same_examples() -> None:
    one = virtual_epoch_budget(
        1_000_000, 14.3, per_worker_batch=50, num_workers=1, num_checkpoints=15
    )
    two = virtual_epoch_budget(
        1_000_000, 14.3, per_worker_batch=50, num_workers=2, num_checkpoints=15
    )
    assert (one.steps_per_virtual_epoch, two.steps_per_virtual_epoch) == (19_066, 9_533)
    assert abs(one.examples_seen - two.examples_seen) < two.global_batch


def test_stop_point_is_exact_decimal_not_float() -> None:
    # In floats 0.29 * 100 = 28.999999999999996, which would floor 29-example batches to 0.
    assert int(0.29 * 100 / 29) == 0
    plan = virtual_epoch_budget(100, 0.29, per_worker_batch=29, num_checkpoints=1)
    assert plan.steps_per_virtual_epoch == 1
    assert plan.examples_budget == 29
    assert int(0.57 * 100 / 57) == 0
    assert virtual_epoch_budget(100, 0.57, per_worker_batch=57).steps_per_virtual_epoch == 1


def test_integer_stop_point_and_one_checkpoint() -> None:
    plan = virtual_epoch_budget(60_000, 5, per_worker_batch=64, num_workers=2)
    assert plan.steps_per_virtual_epoch == 300_000 // 128 == 2_343
    assert plan.total_steps == 2_343


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        (
            {"num_examples": 100, "stop_point": 1.0, "per_worker_batch": 64, "num_checkpoints": 2},
            "less than one global batch",
        ),
        ({"num_examples": 0, "stop_point": 1.0, "per_worker_batch": 1}, "num_examples"),
        ({"num_examples": 10, "stop_point": 0.0, "per_worker_batch": 1}, "stop_point"),
        ({"num_examples": 10, "stop_point": float("nan"), "per_worker_batch": 1}, "stop_point"),
        ({"num_examples": 10, "stop_point": 1.0, "per_worker_batch": 0}, "per_worker_batch"),
        (
            {"num_examples": 10, "stop_point": 1.0, "per_worker_batch": 1, "num_workers": 0},
            "num_workers",
        ),
    ],
)
def test_impossible_budgets_are_config_errors(kwargs: dict[str, float], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        virtual_epoch_budget(**kwargs)  # type: ignore[arg-type]


def test_linear_lr_scaling_rule() -> None:
    assert linear_scaled_lr(0.1, global_batch=1024, reference_batch=256) == pytest.approx(0.4)
    assert linear_scaled_lr(1e-3, global_batch=32, reference_batch=64) == pytest.approx(5e-4)
    assert linear_scaled_lr(0.05, global_batch=128, reference_batch=128) == 0.05
    # 2 workers x 64 at the LR tuned for 1 worker x 64 doubles the LR
    plan = virtual_epoch_budget(60_000, 1, per_worker_batch=64, num_workers=2)
    assert linear_scaled_lr(0.01, plan.global_batch, reference_batch=64) == pytest.approx(0.02)
    with pytest.raises(ConfigError, match="lr"):
        linear_scaled_lr(0.0, 64, 64)
    with pytest.raises(ConfigError, match="reference_batch"):
        linear_scaled_lr(0.1, 64, 0)
