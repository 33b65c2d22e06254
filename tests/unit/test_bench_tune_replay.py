"""bench/tune_replay.py: replayed searches count trial-epochs as the real bench does, ASHA's
decisions come from the scheduler `graft tune` builds, and the oracle bounds every scheduler."""

from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _replay_module() -> ModuleType:
    sys.path.insert(0, str(BENCH))  # tune_replay imports its sibling, tune_efficiency
    spec = importlib.util.spec_from_file_location("tune_replay", BENCH / "tune_replay.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


replay = _replay_module()
Curve = replay.Curve
WINNER = Curve((0.5, 0.6, 0.96, 0.97))  # reaches 0.95 at its third epoch
LOSER = Curve((0.5,) * 12)  # never does


def _search(
    pool: list,
    decide: object,
    *,
    budget: int = 100,
    concurrency: int = 2,
    draws: random.Random | None = None,
) -> int | None:
    return replay.replay_search(
        pool,
        0.95,
        budget=budget,
        concurrency=concurrency,
        trial_cap=40,
        rng=draws or random.Random(0),
        decide=decide,
    )


def test_fifo_counts_every_running_trials_epochs_in_turn_until_one_reaches_the_target() -> None:
    # two winners side by side: epochs 1,1,2,2 then the first trial's third epoch reaches it
    assert _search([WINNER], replay.fifo()) == 5
    assert _search([WINNER], replay.fifo(), concurrency=1) == 3


def test_a_search_that_never_reaches_the_target_spends_its_budget_and_counts_as_missed() -> None:
    assert _search([LOSER], replay.fifo(), budget=30) is None
    figures = replay.replay(
        [LOSER],
        0.95,
        "FIFO",
        replay.fifo,
        budget=30,
        concurrency=2,
        trial_cap=40,
        searches=5,
        seed=0,
    )
    assert figures.mean_epochs == 30 and figures.missed == 1.0 and figures.half_width == 0.0


def test_a_trial_that_ends_on_its_own_frees_its_slot_for_the_next() -> None:
    short = Curve((0.5, 0.5))  # the recipe's early stopping ended it after two epochs
    # one slot: 2 epochs of the short curve, then the winner's 3
    assert _search([short, WINNER], replay.fifo(), concurrency=1, draws=_Draws([0, 1])) == 5


def test_the_oracle_sees_a_losing_trial_for_one_epoch_only() -> None:
    # loser epoch 1 (stopped), winner epochs 1-3
    pool = [LOSER, WINNER]
    assert _search(pool, replay.oracle(0.95), concurrency=1, draws=_Draws([0, 1])) == 4
    assert _search(pool, replay.fifo(), concurrency=1, draws=_Draws([0, 1])) == 12 + 3


def test_several_brackets_replay_graft_tunes_asynchronous_hyperband() -> None:
    scheduler = replay.asha_scheduler("default", 1, 3, brackets=3)
    assert len(scheduler._brackets) == 3  # one bracket is plain ASHA


def test_asha_cuts_through_the_scheduler_graft_tune_builds() -> None:
    decide = replay.asha(replay.asha_scheduler("default", grace_period=1, reduction_factor=3))
    strong = replay._Trial("strong", Curve((0.9,) * 12))
    weak = replay._Trial("weak", Curve((0.4,) * 12))
    strong.epochs = weak.epochs = 1
    assert decide(strong, False)  # the rung's first result has nothing to lose to
    assert not decide(weak, False)  # below the rung's cutoff: cut at the grace period
    strong.curve = Curve((0.9, 0.1) + (0.9,) * 10)
    strong.epochs = 2  # passed rung 1 already; rung 2 is at epoch 3: not judged again
    assert decide(strong, False)


@pytest.mark.parametrize(("grace", "brackets"), [(1, 1), (2, 1), (1, 3)])
def test_asha_replayed_on_curves_that_tell_early_saves_epochs_and_the_oracle_saves_most(
    grace: int, brackets: int
) -> None:
    # one configuration in ten reaches 0.95, and it leads from its first epoch on (ASHA keeps
    # a trial that ties its rung's cutoff, so the losers differ)
    pool = [Curve((0.3 + 0.03 * i,) * 12) for i in range(9)] + [Curve((0.8, 0.9, 0.96))]
    common = {"budget": 400, "concurrency": 2, "trial_cap": 200, "searches": 300, "seed": 1}
    fifo = replay.replay(pool, 0.95, "FIFO", replay.fifo, **common)
    asha = replay.replay(
        pool,
        0.95,
        "ASHA",
        lambda: replay.asha(replay.asha_scheduler("default", grace, 3, brackets)),
        **common,
    )
    bound = replay.replay(pool, 0.95, "oracle", lambda: replay.oracle(0.95), **common)
    assert bound.mean_epochs < asha.mean_epochs < 0.75 * fifo.mean_epochs


class _Draws(random.Random):
    """Hands out pool entries in a fixed order, then repeats the last."""

    def __init__(self, order: list[int]) -> None:
        super().__init__(0)
        self.order = list(order)

    def choice(self, seq):  # type: ignore[no-untyped-def, override]
        return seq[self.order.pop(0) if len(self.order) > 1 else self.order[0]]


def test_the_plot_has_a_bar_per_scheduler_and_target(tmp_path: Path) -> None:
    common = {"budget": 60, "concurrency": 2, "trial_cap": 40, "searches": 20, "seed": 0}
    pool = [LOSER, WINNER]
    figures = [
        replay.replay(pool, target, name, make, **common)
        for target in (0.6, 0.95)
        for name, make in (("FIFO", replay.fifo), ("oracle", lambda t=target: replay.oracle(t)))
    ]
    path = replay.plot_ratios(figures, tmp_path / "replay.png", 60)
    assert path.stat().st_size > 10_000
