"""Moving the champion by compare-and-set under the registry-tag lock, against a real SQLite
MLflow store: two evaluate -> export pairs in threads, stepped in 50 seeded random orders.

Actor A's model is better than actor B's, and both beat the starting champion. Each actor
reads the champion and compares with it (evaluate), then runs export's real
``promote_champion``; a scheduler lets one actor run at a time, to its next step boundary
(read, compare, announce, number, waiting, locked, re-read, set), in a random order. The
better model stays champion, or the later export fails with PromotionConflict; the stale one
(B promoted over A, which it was never compared with) never wins. The same schedules without
the lock do let it win, so the test can tell."""

from __future__ import annotations

import os
import queue
import random
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from local_tracking import tiny_config_tracked_in
from mlflow.tracking import MlflowClient

from graft.config import GraftConfig
from graft.errors import PromotionConflict, RegistryError
from graft.export.promotion import LOCK_TAG_PREFIX, PromotionLock, promote_champion
from graft.io.registry import champion_alias, registry_tags, set_alias

MODEL_NAME = "graft-promotion"
SCHEDULES = 50
ACCURACY = {"start": 0.80, "better": 0.90, "worse": 0.85}


@dataclass
class Registry:
    root: Path
    config: GraftConfig
    versions: dict[str, str]  # "start", "better", "worse" -> version
    client: Any = field(repr=False)

    def config_with(self, *overrides: str) -> GraftConfig:
        return tiny_config_tracked_in(self.root, f"export.model_name={MODEL_NAME}", *overrides)

    def reset(self) -> None:
        set_alias(self.config, "champion", self.versions["start"])
        for key in registry_tags(self.config):
            assert not key.startswith(LOCK_TAG_PREFIX), f"a lock entry was left: {key}"

    def accuracy(self, version: str) -> float:
        """What evaluate measures of the champion (here: known)."""
        by_version = {number: ACCURACY[name] for name, number in self.versions.items()}
        return by_version[version]


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """Three versions of one model (no files: promotion only moves aliases), in a SQLite store
    on tmpfs where the machine has one: each of the ~1,000 steps writes or reads the store,
    and a disk's fsync would triple the time."""
    shm = Path("/dev/shm")
    on_tmpfs = shm.is_dir() and os.access(shm, os.W_OK)
    with tempfile.TemporaryDirectory(
        dir=shm if on_tmpfs else tmp_path_factory.mktemp("shm")
    ) as root:
        config = tiny_config_tracked_in(Path(root), f"export.model_name={MODEL_NAME}")
        uri = config.resolved_tracking_uri()
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        run_id = client.create_run(client.create_experiment("promotion")).info.run_id
        client.create_registered_model(MODEL_NAME)
        versions = {}
        for name in ACCURACY:
            version = client.create_model_version(MODEL_NAME, f"runs:/{run_id}/model", run_id)
            versions[name] = str(version.version)
        yield Registry(Path(root), config, versions, client)


class Scheduler:
    """Runs each actor in a thread of its own, one at a time: the chosen actor runs to its
    next step boundary (its ``pause``), then a seeded random choice picks who runs next."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.go: dict[str, threading.Semaphore] = {}
        self.arrived: queue.Queue[tuple[str, str]] = queue.Queue()
        self.steps: list[tuple[str, str]] = []

    def pause_for(self, actor: str) -> Callable[[str], None]:
        def pause(step: str) -> None:
            self.arrived.put((actor, step))
            self.go[actor].acquire()

        return pause

    def run(self, actors: dict[str, Callable[[Callable[[str], None]], None]]) -> None:
        errors: list[BaseException] = []

        def body(name: str, actor: Callable[[Callable[[str], None]], None]) -> None:
            self.go[name].acquire()
            try:
                actor(self.pause_for(name))
            except BaseException as exc:  # handed to the test thread below
                errors.append(exc)
            finally:
                self.arrived.put((name, "done"))

        for name in actors:
            self.go[name] = threading.Semaphore(0)
        threads = [threading.Thread(target=body, args=item) for item in actors.items()]
        for thread in threads:
            thread.start()
        running = set(actors)
        while running:
            chosen = self.rng.choice(sorted(running))
            self.go[chosen].release()
            name, step = self.arrived.get(timeout=60)
            self.steps.append((name, step))
            if step == "done":
                running.discard(name)
        for thread in threads:
            thread.join(timeout=60)
        if errors:
            raise errors[0]


class _NoLock(PromotionLock):
    """The control: the same steps with the lock taken out."""

    def acquire(self) -> None:
        self.pause("announced")

    def release(self) -> None:
        return None

    def ensure_held(self) -> None:
        return None


def _actor(
    registry: Registry, name: str, outcomes: dict[str, str], locked: bool
) -> Callable[[Callable[[str], None]], None]:
    """Evaluate (read the champion, compare with it), then export's promotion."""
    config, version = registry.config, registry.versions[name]

    def act(pause: Callable[[str], None]) -> None:
        compared_with = champion_alias(config)
        pause("read champion")
        passed = compared_with is None or ACCURACY[name] > registry.accuracy(compared_with)
        pause("compare")
        if not passed:
            outcomes[name] = "refused by the gate"
            return
        lock_type = PromotionLock if locked else _NoLock
        lock = lock_type(config, by=name, pause=pause, poll_s=0.0)
        try:
            promote_champion(config, version, compared_with, lock=lock)
        except PromotionConflict as conflict:
            outcomes[name] = f"conflict: {conflict}"
        else:
            outcomes[name] = "promoted"

    return act


def _schedule(registry: Registry, seed: int, locked: bool) -> tuple[str, dict, list]:
    registry.reset()
    outcomes: dict[str, str] = {}
    scheduler = Scheduler(seed)
    scheduler.run({name: _actor(registry, name, outcomes, locked) for name in ("better", "worse")})
    champion = champion_alias(registry.config)
    winner = {version: name for name, version in registry.versions.items()}[str(champion)]
    return winner, outcomes, scheduler.steps


def _sets(steps: list[tuple[str, str]]) -> list[str]:
    return [name for name, step in steps if step == "set"]


def _locked_at_once(steps: list[tuple[str, str]]) -> bool:
    """Whether one actor reached "locked" while the other held the lock (from its "locked"
    to its end: it releases right before it is done)."""
    holder = None
    for name, step in steps:
        if step == "locked":
            if holder is not None:
                return True
            holder = name
        elif step == "done" and name == holder:
            holder = None
    return False


def test_fifty_random_schedules_never_let_the_stale_export_win(registry: Registry) -> None:
    seen = {"better champion": 0, "worse champion, better conflicted": 0, "lock waited": 0}
    versions = registry.versions
    for seed in range(SCHEDULES):
        winner, outcomes, steps = _schedule(registry, seed, locked=True)
        where = f"seed {seed}: {outcomes}, steps {steps}"
        seen["lock waited"] += any(step == "waiting" for _, step in steps)
        assert not _locked_at_once(steps), where
        # the stale one never wins: "worse" never moves the alias after "better" did
        assert _sets(steps) in (["better"], ["worse"], ["worse", "better"]), where
        if winner == "better":
            seen["better champion"] += 1
            assert outcomes["better"] == "promoted", where
        else:
            # "worse" promoted first (compared with the champion it replaced); "better",
            # compared with that old champion too, is then refused with the versions named
            assert winner == "worse", where
            seen["worse champion, better conflicted"] += 1
            conflict = outcomes["better"]
            assert conflict.startswith("conflict"), where
            assert f"version {versions['better']} with version {versions['start']}" in conflict
            assert f"the champion is now version {versions['worse']}" in conflict, where
    assert all(seen.values()), seen  # both outcomes came up, and waits on the lock


def test_the_same_schedules_without_the_lock_let_the_stale_export_win(
    registry: Registry,
) -> None:
    """The control: without the lock both exports can re-read the old champion, and the worse
    model overwrites the better one it was never compared with."""
    for seed in range(SCHEDULES):
        winner, outcomes, steps = _schedule(registry, seed, locked=False)
        if _sets(steps) == ["better", "worse"]:
            assert winner == "worse" and outcomes == {"better": "promoted", "worse": "promoted"}
            return
    pytest.fail("no schedule let the stale export win without the lock")


def test_promotion_is_compare_and_set_and_a_retry_is_a_no_op(registry: Registry) -> None:
    registry.reset()
    config, versions = registry.config, registry.versions
    assert promote_champion(config, versions["better"], versions["start"]) is True
    # a retried export that already promoted its version: nothing to do
    assert promote_champion(config, versions["better"], versions["start"]) is False
    with pytest.raises(PromotionConflict) as refused:
        promote_champion(config, versions["worse"], versions["start"])
    message = str(refused.value)
    assert f"compared version {versions['worse']} with version {versions['start']}" in message
    assert f"the champion is now version {versions['better']}" in message
    assert f"set_registered_model_alias('{MODEL_NAME}', 'champion', '{versions['worse']}')" in (
        message
    )
    assert champion_alias(config) == versions["better"]
    assert not [key for key in registry_tags(config) if key.startswith(LOCK_TAG_PREFIX)]


def test_a_crashed_exports_place_in_the_lock_ages_out(registry: Registry) -> None:
    """An export killed while it held the lock leaves its tag behind; after
    export.promotion_lock_timeout_s the next export removes it and goes on, and the crashed
    one, were it only frozen, finds its place gone before it could set the alias."""
    registry.reset()
    config = registry.config_with("export.promotion_lock_timeout_s=0.5")
    crashed = PromotionLock(config, by="crashed export")
    crashed.acquire()  # and never released
    started = time.monotonic()
    versions = registry.versions
    assert promote_champion(config, versions["better"], versions["start"]) is True
    waited = time.monotonic() - started
    assert 0.4 < waited < 5
    with pytest.raises(RegistryError, match=r"place in the promotion lock .* was removed"):
        crashed.ensure_held()
    assert not [key for key in registry_tags(config) if key.startswith(LOCK_TAG_PREFIX)]
