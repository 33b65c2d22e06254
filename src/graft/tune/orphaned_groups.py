"""Give back the CPUs of Ray Train runs that Tune stopped while their workers were starting.

A Train V2 controller creates its workers' placement group, and a detached cleaner removes it
if the controller dies, but only once the worker group has started and registered it. Tune
stops a trial by removing the trial's placement group, which kills the controller running in
it. A trial stopped during its workers' start-up (an epoch or time budget spent, ASHA's cut
of a trial that restarted) therefore leaves its workers' placement group behind, reserved for
as long as the driver lives. Seen here: two such groups held 1.98 of 2 CPUs after a
time-budgeted search, and every later trial in that Ray waited out Ray Train's 180 s worker
start-up and failed.

:class:`OrphanedGroupSweeper` is a Tune callback that removes the placement groups this job's
dead Train controllers left behind, as trials end and every few seconds. When the search
ends it waits (up to :data:`SETTLE_TIMEOUT_S`) for the last stopped trials' controllers to die
and sweeps once more: Tune removes a stopped trial's group asynchronously, so a controller
still dying at the final sweep would otherwise leave its workers' group reserved (seen in CI:
0.99 of 2 CPUs held after an epoch-budgeted search). Ray's public State
API does not say which actor created a placement group, so this reads the GCS tables through
:mod:`graft.io.ray_compat`; if they change in a Ray release, the sweep logs a warning once
and does nothing.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from ray.tune import Callback

from graft.io import ray_compat

log = logging.getLogger(__name__)

CONTROLLER_CLASS = "TrainController"  # Ray Train V2's per-run controller actor
SWEEP_INTERVAL_S = 5.0
SETTLE_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class OrphanedGroup:
    placement_group_id: str  # hex
    creator_actor_id: str  # hex of the dead controller
    cpus: float  # what it reserves (or asks for, while pending)


def train_controller_states() -> dict[str, str]:
    """This job's Train controllers, hex actor id -> Ray's actor state (``ALIVE``,
    ``DEAD``, ...)."""
    return ray_compat.job_actor_states(CONTROLLER_CLASS)


def orphaned_placement_groups() -> list[OrphanedGroup]:
    """This job's live or pending placement groups whose creator, a Train controller, is
    dead: nothing can use them any more (the workers it would place are the controller's
    and died with it)."""
    made_by_actors = ray_compat.actor_placement_groups()
    if not made_by_actors:  # nothing to look up in the actor table
        return []
    controllers = train_controller_states()
    return [
        OrphanedGroup(group.placement_group_id, group.creator_actor_id, group.cpus)
        for group in made_by_actors
        if controllers.get(group.creator_actor_id) == "DEAD"
    ]


def live_train_controllers() -> list[str]:
    """Hex ids of this job's Train controllers that are not dead yet."""
    return [actor for actor, state in train_controller_states().items() if state != "DEAD"]


def remove_orphaned_placement_groups() -> list[OrphanedGroup]:
    """Remove the placement groups dead Train controllers of this job left behind."""
    import ray
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    orphans = orphaned_placement_groups()
    for orphan in orphans:
        remove_placement_group(
            PlacementGroup(ray.PlacementGroupID(bytes.fromhex(orphan.placement_group_id)))
        )
    if orphans:
        log.info(
            "gave back %.2f CPUs: removed %d placement group(s) of Ray Train runs that Tune "
            "stopped while their workers were starting",
            sum(o.cpus for o in orphans),
            len(orphans),
        )
    return orphans


class OrphanedGroupSweeper(Callback):
    """Removes orphaned Train placement groups as trials end and every few seconds."""

    def __init__(self, interval_s: float = SWEEP_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self._last = 0.0
        self._broken = False
        # Train runs of this job from before the search (a pretrain, the LR range test) are
        # not the search's to wait for: their controllers may outlive their runs
        self._earlier_controllers: set[str] = set()

    def setup(
        self,
        stop: Any = None,
        num_samples: int | None = None,
        total_num_samples: int | None = None,
        **info: Any,
    ) -> None:
        try:
            self._earlier_controllers = set(live_train_controllers())
        except Exception:  # the sweep reports a change in Ray's internals itself
            self._earlier_controllers = set()

    def sweep(self) -> None:
        if self._broken:
            return
        self._last = time.monotonic()
        try:
            remove_orphaned_placement_groups()
        except Exception as error:  # the Ray internals this reads may change
            self._broken = True
            log.warning(
                "cannot sweep placement groups left by stopped Ray Train runs (%s); a trial "
                "stopped during its worker start-up may keep its CPUs reserved",
                error,
            )

    def on_step_begin(self, iteration: int, trials: list[Any], **info: Any) -> None:
        if time.monotonic() - self._last >= self.interval_s:
            self.sweep()

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.sweep()

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.sweep()

    def settle(self, timeout_s: float = SETTLE_TIMEOUT_S, poll_s: float = 0.5) -> None:
        """Sweep until every Train controller the search started is dead, or ``timeout_s``
        passed.

        Called once no trial runs: such a controller still alive then belongs to a trial Tune
        has just stopped and is dying with that trial's placement group."""
        started = time.monotonic()
        while not self._broken:
            try:
                alive = set(live_train_controllers()) - self._earlier_controllers
            except Exception:  # same Ray internals as the sweep; nothing more to wait for
                alive = set()
            # after the look: a controller that dies in between is swept now or next pass
            self.sweep()
            if not alive:
                waited = time.monotonic() - started
                if waited >= poll_s:
                    log.info("waited %.1f s for stopped trials' Train controllers to exit", waited)
                return
            if time.monotonic() - started >= timeout_s:
                log.warning(
                    "%d Ray Train controller(s) of stopped trials still alive %.0f s after "
                    "the search ended; their workers' CPUs stay reserved until they exit",
                    len(alive),
                    timeout_s,
                )
                return
            time.sleep(poll_s)

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        self.settle()
