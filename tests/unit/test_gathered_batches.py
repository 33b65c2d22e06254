"""The one-process training loader gathers each batch in one op, and it must give the batches
a shuffling DataLoader gives from the same generator: same rows, same order, the generator
left in the same state (resumes and virtual-epoch passes replay it), across passes."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from graft.train.loop_state import LoopState, cycling_batches
from graft.train.rows import shuffled_batches


def _rows(count: int) -> TensorDataset:
    inputs = torch.randn(count, 5, generator=torch.Generator().manual_seed(1))
    return TensorDataset(inputs, torch.arange(count))


@pytest.mark.parametrize("drop_last", [True, False])
def test_gathered_batches_equal_a_shuffling_dataloaders_over_several_passes(
    drop_last: bool,
) -> None:
    rows = _rows(103)
    reference_rng, gathered_rng = (torch.Generator().manual_seed(7) for _ in range(2))
    reference = DataLoader(
        rows, batch_size=8, shuffle=True, generator=reference_rng, drop_last=drop_last
    )
    gathered = shuffled_batches(rows, 8, gathered_rng, drop_last)
    assert len(gathered) == len(reference)
    for _ in range(3):
        expected, got = list(reference), list(gathered)
        assert len(got) == len(expected) == (12 if drop_last else 13)
        for (x_ref, y_ref), (x_got, y_got) in zip(expected, got, strict=True):
            assert torch.equal(x_got, x_ref)
            assert torch.equal(y_got, y_ref)
        assert torch.equal(gathered_rng.get_state(), reference_rng.get_state())
    # the batches differ pass to pass: the loader does shuffle
    assert not torch.equal(next(iter(gathered))[1], next(iter(gathered))[1])


def test_a_resumed_cycle_replays_the_gathered_pass() -> None:
    """cycling_batches restores the generator state of the pass it resumes; the gathered
    loader must draw its shuffle from that state, as a DataLoader does."""
    rows = _rows(40)
    generator = torch.Generator().manual_seed(3)
    state = LoopState()
    batches = cycling_batches(shuffled_batches(rows, 4, generator, True), state, generator)
    drawn = [next(batches)[1] for _ in range(15)]  # 10 per pass: 5 into the second
    resumed_state = LoopState(
        data_pass=state.data_pass, batch_in_pass=state.batch_in_pass, pass_rng=state.pass_rng
    )
    assert (resumed_state.data_pass, resumed_state.batch_in_pass) == (1, 5)
    uninterrupted = drawn + [next(batches)[1] for _ in range(5)]
    fresh = torch.Generator().manual_seed(99)  # a restarted worker's generator
    resumed = cycling_batches(shuffled_batches(rows, 4, fresh, True), resumed_state, fresh)
    for expected in uninterrupted[15:]:
        assert torch.equal(next(resumed)[1], expected)
