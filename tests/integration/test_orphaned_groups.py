"""A placement group whose creator, a Ray Train controller, died is given back; a live
controller's group, and a group of any other dead actor, are left alone. Real Ray, with an
actor named like Ray Train V2's controller standing in for one killed mid start-up."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import ray
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group

from graft.tune.orphaned_groups import (
    OrphanedGroupSweeper,
    live_train_controllers,
    orphaned_placement_groups,
    remove_orphaned_placement_groups,
)

pytestmark = [pytest.mark.ray, pytest.mark.timeout(120)]


def _group_maker(class_name: str) -> Any:
    """An actor class named ``class_name`` that reserves a placement group from inside the
    actor, as a Train controller does (made in a function: Ray's workers cannot import the
    test module, so the class travels by value)."""

    def reserve(self: object, cpus: float) -> str:
        group = placement_group([{"CPU": cpus}])
        ray.get(group.ready(), timeout=30)
        return str(group.id.hex())

    # Ray records an actor's class by its name
    return ray.remote(num_cpus=0)(type(class_name, (), {"reserve": reserve}))


def _free_cpus() -> float:
    return float(ray.available_resources().get("CPU", 0.0))


def _until(condition: Callable[[], bool], seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.25)
    return False


def _orphan_ids() -> set[str]:
    return {orphan.placement_group_id for orphan in orphaned_placement_groups()}


def test_only_a_dead_train_controllers_placement_group_is_removed(ray_local: None) -> None:
    total = float(ray.cluster_resources()["CPU"])
    controller = _group_maker("TrainController").remote()  # Ray Train V2's controller's name
    bystander = _group_maker("Bystander").remote()
    ours = ray.get(controller.reserve.remote(1.0))
    theirs = ray.get(bystander.reserve.remote(0.5))
    assert _until(lambda: _free_cpus() == pytest.approx(total - 1.5))
    # while the controller lives, its group is in use
    assert ours not in _orphan_ids()

    ray.kill(controller)
    ray.kill(bystander)
    assert _until(lambda: ours in _orphan_ids()), "the dead controller's group was not found"
    assert theirs not in _orphan_ids()  # another actor's group is not Graft's to judge

    removed = remove_orphaned_placement_groups()
    assert [orphan.placement_group_id for orphan in removed] == [ours]
    assert removed[0].cpus == pytest.approx(1.0)
    assert _until(lambda: _free_cpus() == pytest.approx(total - 0.5))
    assert remove_orphaned_placement_groups() == []

    remove_placement_group(PlacementGroup(ray.PlacementGroupID(bytes.fromhex(theirs))))
    assert _until(lambda: _free_cpus() == pytest.approx(total))


def test_settle_waits_for_a_dying_controller_and_gives_its_group_back(ray_local: None) -> None:
    """At a search's end a stopped trial's controller may still be dying: the final sweep
    waits for it instead of missing its group, and does not wait for a controller that was
    alive before the search (a pretrain's)."""
    total = float(ray.cluster_resources()["CPU"])
    earlier = _group_maker("TrainController").remote()
    ray.get(earlier.reserve.remote(0.5))
    sweeper = OrphanedGroupSweeper()
    sweeper.setup()  # the search starts
    controller = _group_maker("TrainController").remote()
    ours = ray.get(controller.reserve.remote(1.0))
    assert _until(lambda: _free_cpus() == pytest.approx(total - 1.5))
    # the controller dies a moment after the search ended, as Tune's stop of its trial lands
    threading.Timer(2.0, ray.kill, args=(controller,)).start()

    sweeper.sweep()  # what a sweep without the wait finds: nothing yet
    assert ours not in _orphan_ids()
    started = time.monotonic()
    sweeper.settle(timeout_s=20.0, poll_s=0.25)
    # the earlier controller, still alive, is not waited for
    assert time.monotonic() - started < 15.0
    assert len(live_train_controllers()) == 1
    assert ours not in _orphan_ids()
    assert _until(lambda: _free_cpus() == pytest.approx(total - 0.5), seconds=5.0)

    ray.kill(earlier)
    assert _until(lambda: remove_orphaned_placement_groups() != [])
    assert _until(lambda: _free_cpus() == pytest.approx(total))
