"""A worker's stream (data.loader: streaming) as the loop's epochs: one pass per epoch, each
with its own shuffle seed, the next epoch started while this one is validated, and a fit that
would leave Ray Data no CPU refused before it starts."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from graft.errors import ConfigError, DatasetError
from graft.train.stream_data import StreamedSplit, require_decode_cpus


class FakeShard:
    """A DataIterator stand-in: records the shuffle seed each pass was started with."""

    def __init__(self, rows: int, fail_on_pass: int | None = None) -> None:
        self.rows, self.fail_on_pass = rows, fail_on_pass
        self.seeds: list[Any] = []

    def iter_torch_batches(self, **settings: Any) -> Any:
        self.seeds.append(settings["local_shuffle_seed"])
        failing = len(self.seeds) - 1 == self.fail_on_pass
        size = settings["batch_size"]

        def batches() -> Any:
            if failing:
                raise DatasetError("s3://bucket/a.png is not a readable image")
            for start in range(0, self.rows, size):
                n = min(size, self.rows - start)
                yield {"x": torch.zeros(n, 1, 2, 2), "y": torch.arange(start, start + n)}

        return batches()


def test_each_epoch_is_one_pass_with_its_own_shuffle_seed() -> None:
    shard = FakeShard(rows=10)
    split = StreamedSplit(shard, 10, batch_size=4, drop_last=False, shuffle_buffer=8, seed=3)
    assert len(split) == 3
    for epoch in range(3):
        split.set_epoch(epoch)
        labels = torch.cat([y for _, y in split]).tolist()
        assert labels == list(range(10))
    # passes for epochs 0, 1, 2 and the primed epoch 3: one per epoch, each reseeded
    assert len(shard.seeds) == 4 and len(set(shard.seeds)) == 4
    again = FakeShard(rows=10)
    replay = StreamedSplit(again, 10, batch_size=4, drop_last=False, shuffle_buffer=8, seed=3)
    for epoch in range(3):
        replay.set_epoch(epoch)
        list(replay)
    assert again.seeds == shard.seeds  # the seeds follow (seed, epoch)


def test_a_failure_in_the_primed_epoch_is_raised_by_the_pass_that_draws_it() -> None:
    split = StreamedSplit(FakeShard(rows=4, fail_on_pass=1), 4, 2, False, None, 0)
    list(split)
    with pytest.raises(DatasetError, match="not a readable image"):
        list(split)


def test_a_streamed_fit_that_leaves_no_cpu_for_decoding_is_refused() -> None:
    require_decode_cpus(total_cpus=2, reserved_cpus=1)
    with pytest.raises(ConfigError, match=r"resources.cpus \(e.g. 0.5\)"):
        require_decode_cpus(total_cpus=2, reserved_cpus=2)
