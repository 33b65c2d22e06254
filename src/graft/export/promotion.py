"""Moving the ``champion`` alias by compare-and-set.

Evaluate compares the model with the champion it read and records that version (gate.json's
``champion_version``, null without a champion). Export may move the alias only while it still
points there: otherwise a slow export, or one retried hours later, would replace a newer
champion that its model was never compared with (the last writer would win). MLflow has no
compare-and-set on an alias, so export takes a lock, re-reads the alias, and either sets it
or refuses with :class:`PromotionConflict`. Every writer of ``champion`` in Graft goes through
:func:`promote_champion`; a person moving the alias by hand does not take the lock.

The lock is Lamport's bakery algorithm over tags of the registered model. MLflow has no atomic
test-and-set, but each tag is a register that one client writes and every client reads, and
that is all the bakery needs. Each export writes its own tag ``graft.promotion_lock.<owner>``
(a fresh uuid): first "choosing", then a number one above every number it sees, then waits
until no other entry is choosing and none holds a smaller (number, owner). Two exports that
read the same numbers take the same number and the owner breaks the tie; an export that
arrives later takes a larger number. Releasing deletes the tag.

The guarantee: two exports never hold the lock at once, so never both re-read and set the
alias in between, as long as the registry's tag writes are seen by every later read (true
of MLflow's database stores, SQLite and Postgres alike, reached directly or through
``mlflow server``) and no holder stalls for longer than ``export.promotion_lock_timeout_s``.
The limit: an entry that has not been renewed for that long is taken for a crashed export's
and removed, so that a killed pod cannot block promotion for ever; an export stalled that
long (a frozen node) could then overlap another. It checks that it still holds its entry
right before it sets the alias, which leaves only that last call's own duration. Entries are
aged by each client's clock, so clocks must agree to well within the timeout.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import NamedTuple

from graft.config import GraftConfig
from graft.errors import PromotionConflict, RegistryError
from graft.io import registry

log = logging.getLogger(__name__)

LOCK_TAG_PREFIX = "graft.promotion_lock."
CHAMPION = "champion"


class Ticket(NamedTuple):
    """One export's place in the lock: what its tag holds."""

    owner: str
    number: int  # 0 while choosing
    choosing: bool
    at: float  # when its owner last wrote it (seconds since the epoch, the owner's clock)
    by: str  # who, for the messages (an export run id)


def _ticket(key: str, value: str) -> Ticket | None:
    try:
        data = json.loads(value)
        return Ticket(
            key.removeprefix(LOCK_TAG_PREFIX),
            int(data["number"]),
            bool(data["choosing"]),
            float(data["at"]),
            str(data.get("by", "")),
        )
    except (ValueError, KeyError, TypeError):
        return None


def _no_pause(step: str) -> None:
    return None


@dataclass
class PromotionLock:
    """The registered model's promotion lock (the bakery above), for ``with``. ``pause`` is
    called at each step boundary (a test interleaves two exports step by step through it);
    ``poll_s`` is the wait between two looks at the queue (by default a twentieth of the
    timeout, at most 1 s)."""

    config: GraftConfig
    by: str = ""
    pause: Callable[[str], None] = _no_pause
    poll_s: float | None = None
    owner: str = field(default_factory=lambda: uuid.uuid4().hex)
    number: int = 0
    _written_at: float = 0.0

    @property
    def key(self) -> str:
        return f"{LOCK_TAG_PREFIX}{self.owner}"

    @property
    def timeout_s(self) -> float:
        return self.config.export.promotion_lock_timeout_s

    def announce(self) -> None:
        """Step 1: say that this export is choosing a number."""
        self.number = 0
        self._write(choosing=True)

    def take_number(self) -> None:
        """Step 2: one above every number held now."""
        others = self._others()
        self.number = 1 + max((ticket.number for ticket in others), default=0)
        self._write(choosing=False)

    def my_turn(self) -> bool:
        """Step 3, repeated until True: no other export is choosing or ahead in the queue.
        Renews this export's entry so that waiters do not take it for a crashed one."""
        others = self._others()
        if time.time() - self._written_at > self.timeout_s / 4:
            self._write(choosing=False)
        mine = (self.number, self.owner)
        return not any(ticket.choosing or (ticket.number, ticket.owner) < mine for ticket in others)

    def ensure_held(self) -> None:
        """Raise RegistryError if this export's entry was removed (taken for a crashed
        export's after ``export.promotion_lock_timeout_s``, or deleted by hand)."""
        self._others()

    def release(self) -> None:
        registry.delete_registry_tag(self.config, self.key)
        self.number = 0

    def acquire(self) -> None:
        """Wait for the lock; RegistryError when it stays held for twice the timeout."""
        try:
            self.announce()
            self.pause("announced")
            self.take_number()
            self.pause("numbered")
            self._wait_for_turn()
        except BaseException:
            self._release_after_error()
            raise

    def _wait_for_turn(self) -> None:
        deadline = time.monotonic() + 2 * self.timeout_s
        poll_s = min(1.0, self.timeout_s / 20) if self.poll_s is None else self.poll_s
        while not self.my_turn():
            self.pause("waiting")
            if time.monotonic() > deadline:
                holders = ", ".join(ticket.by or ticket.owner for ticket in self._others())
                raise RegistryError(
                    f"the promotion lock of model '{self.config.export.model_name}' stayed "
                    f"held for {2 * self.timeout_s:g} s (by {holders}); retry the export "
                    "when they have finished"
                )
            time.sleep(poll_s)

    def _release_after_error(self) -> None:
        """Release without hiding the error on its way out; if the registry refuses, the
        entry ages out after the timeout."""
        try:
            self.release()
        except RegistryError as exc:
            log.warning("could not release the promotion lock: %s", exc)

    def __enter__(self) -> PromotionLock:
        self.acquire()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if error is None:
            self.release()
        else:
            self._release_after_error()

    def _write(self, choosing: bool) -> None:
        self._written_at = time.time()
        value = {"number": self.number, "choosing": choosing, "at": self._written_at}
        registry.set_registry_tag(self.config, self.key, json.dumps({**value, "by": self.by}))

    def _others(self) -> list[Ticket]:
        """The other exports' live entries, read in one call; entries older than the timeout
        are removed. Raises RegistryError when this export's own entry is gone."""
        tags = registry.registry_tags(self.config)
        if self.key not in tags:
            raise RegistryError(
                f"this export's place in the promotion lock of model "
                f"'{self.config.export.model_name}' was removed: it went "
                f"{self.timeout_s:g} s (export.promotion_lock_timeout_s) without renewing it, "
                "or someone deleted it. Retry the export"
            )
        now = time.time()
        live = []
        for key, value in tags.items():
            if not key.startswith(LOCK_TAG_PREFIX) or key == self.key:
                continue
            ticket = _ticket(key, value)
            if ticket is None or now - ticket.at > self.timeout_s:
                log.warning("removing a crashed export's promotion lock entry %s=%s", key, value)
                registry.delete_registry_tag(self.config, key)
                continue
            live.append(ticket)
        return live


def check_unmoved(
    config: GraftConfig, version: str, compared_with: str | None, current: str | None
) -> bool:
    """Whether to point ``champion`` at ``version``: True when it still points where evaluate
    saw it (``compared_with``; None: no champion), False when it already points at
    ``version`` (an earlier attempt of this export promoted it). Raises PromotionConflict
    when it moved in between."""
    if current == version:
        return False
    if current == compared_with:
        return True
    name = config.export.model_name
    seen = f"version {compared_with}" if compared_with is not None else "no champion"
    now = f"version {current}" if current is not None else "no champion (the alias was removed)"
    raise PromotionConflict(
        f"the champion of model '{name}' moved while this run was judged: evaluate compared "
        f"version {version} with {seen}, and the champion is now {now}. Version {version} "
        "stays the challenger and is not promoted: it was never compared with the current "
        "champion. Judge it against that one in a new pipeline run, or, to promote it anyway, "
        f"MlflowClient().set_registered_model_alias('{name}', '{CHAMPION}', '{version}')"
    )


def promote_champion(
    config: GraftConfig,
    version: str,
    compared_with: str | None,
    by: str = "",
    lock: PromotionLock | None = None,
) -> bool:
    """Point ``champion`` at ``version`` if it still points at ``compared_with`` (compare and
    set, under ``lock``, by default a new one); False when it already did. Raises
    PromotionConflict when it moved."""
    with lock or PromotionLock(config, by) as held:
        held.pause("locked")
        current = registry.champion_alias(config)
        held.pause("re-read")
        if not check_unmoved(config, version, compared_with, current):
            return False
        held.ensure_held()
        registry.set_alias(config, CHAMPION, version)
        held.pause("set")
    log.info("champion of %s: version %s -> %s", config.export.model_name, current, version)
    return True
