"""The only module that touches Ray's private API; everything else uses public import paths.

Each function here reads or writes something Ray does not promise to keep, names the Ray
version it was checked against and says why no public API does the job. A Ray upgrade
therefore has one file to re-check (``tests/unit/test_ray_compat.py`` and
``tests/integration/test_orphaned_groups.py`` exercise it).

The private modules are imported inside the functions, not at the top: a Ray release that
moves them then breaks the one call, which its caller reports, instead of every import of
Graft.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # a training worker that imports this module need not load Ray Tune
    from ray.tune.schedulers import PopulationBasedTraining

# The Ray release (pinned in pyproject.toml) every function below was checked against; a test
# fails when the installed Ray differs, so that an upgrade re-checks this module.
CHECKED_RAY_VERSION = "2.60.0"


@dataclass(frozen=True)
class ActorPlacementGroup:
    """A live or pending placement group that an actor of this job created."""

    placement_group_id: str  # hex
    creator_actor_id: str  # hex
    cpus: float  # what it reserves (or asks for, while pending)


def job_actor_states(class_name: str) -> dict[str, str]:
    """This job's actors of class ``class_name``, hex actor id -> Ray's actor state
    (``ALIVE``, ``DEAD``, ...), dead actors included.

    Checked against Ray 2.60.0. ``ray.util.state.list_actors`` says the same but goes
    through the dashboard's HTTP API, which a driver started with ``include_dashboard=False``
    (or one whose dashboard is still starting) does not have; the GCS actor table is what it
    reads underneath, through ``ray._private.state``.
    """
    import ray
    from ray._private.state import state

    job = ray.JobID.from_hex(ray.get_runtime_context().get_job_id())
    return {
        actor_id: str(actor.get("State"))
        for actor_id, actor in state.actor_table(None, job_id=job).items()
        if actor.get("ActorClassName") == class_name
    }


def actor_placement_groups() -> list[ActorPlacementGroup]:
    """This job's placement groups, not removed and not detached, that an actor (not the
    driver) created.

    Checked against Ray 2.60.0. No public API says which actor created a placement group:
    ``ray.util.state.list_placement_groups`` and ``ray.util.placement_group_table`` give its
    creator job only. The GCS placement group table (``ray._private.state``, records of
    ``ray.core.generated.gcs_pb2.PlacementGroupTableData``) has ``creator_actor_id``.
    """
    import ray
    from ray._private.state import state
    from ray.core.generated import gcs_pb2

    job = ray.get_runtime_context().get_job_id()
    table = gcs_pb2.PlacementGroupTableData  # type: ignore[attr-defined]
    return [
        ActorPlacementGroup(
            group.placement_group_id.hex(),
            group.creator_actor_id.hex(),
            sum(float(b.unit_resources.get("CPU", 0.0)) for b in group.bundles),
        )
        for group in map(
            table.FromString, state._connect_and_get_accessor().get_placement_group_table()
        )
        if group.state != table.REMOVED
        and not group.is_detached
        and group.creator_job_id.hex() == job
        and group.creator_actor_id.hex().strip("f")  # all "f"s: made by the driver
    ]


def pbt_time_attr(scheduler: PopulationBasedTraining) -> str:
    """The result key ``scheduler`` counts time in (its ``time_attr`` argument).

    Checked against Ray 2.60.0: ``PopulationBasedTraining`` keeps it as ``_time_attr`` and
    has no public accessor.
    """
    time_attr: str = scheduler._time_attr
    return time_attr


def mark_pbt_trial_perturbed_at(scheduler: PopulationBasedTraining, trial: Any, time: int) -> None:
    """Record in ``scheduler`` that ``trial`` trained to ``time`` and was ranked there, and
    move the next synchronous perturbation point to at least an interval later: the state
    an unbroken search would hold for a trial restored at ``time``.

    Checked against Ray 2.60.0. Tune saves no scheduler state with an experiment and
    ``PopulationBasedTraining`` has no public way to set a trial's perturbation times or its
    next synchronous perturbation point; they are its ``_trial_state[trial]``
    (``last_train_time``, ``last_perturbation_time``), ``_next_perturbation_sync`` and
    ``_perturbation_interval``. The trial must have been added (``on_trial_add``) first.
    """
    state = scheduler._trial_state[trial]
    state.last_train_time = state.last_perturbation_time = time
    scheduler._next_perturbation_sync = max(
        scheduler._next_perturbation_sync, time + scheduler._perturbation_interval
    )


def train_report_logger() -> logging.Logger:
    """The logger Ray Train writes every ``ray.train.report`` to (all metrics, every rank,
    at INFO).

    Checked against Ray 2.60.0. Ray Train V2 names it after the file of its private module
    ``ray.train.v2._internal.execution.context`` and offers no setting for its level.
    """
    from ray.train.v2._internal.execution import context as train_context

    return logging.getLogger(train_context.__file__)


def reload_auth_settings() -> None:
    """Make this process's Ray read ``RAY_AUTH_MODE`` and its token from the environment again.

    Checked against Ray 2.60.0. Ray reads the mode into its C++ ``RayConfig`` and caches the
    token in ``AuthenticationTokenLoader`` the first time a process uses them, and nothing
    public refreshes either: ``ray._raylet.Config.initialize`` re-reads the config (first, as
    Ray's own ``authentication_test_utils.reset_auth_token_state`` does, so that a draining
    gRPC thread cannot reload a token under a stale mode) and ``reset_cache`` drops the token.
    """
    from ray._raylet import AuthenticationTokenLoader, Config  # type: ignore[attr-defined]

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()
