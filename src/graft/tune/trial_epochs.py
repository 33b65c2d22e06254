"""How a search's compute is counted, in trial-epochs."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TrialEpochs:
    """A search's spend in trial-epochs: each trial's furthest reported epoch, summed.

    A trial restarted from its checkpoint, or a PBT trial that took over an older checkpoint,
    reports epochs again; those are not counted twice. The epoch budget, the live progress and
    the progress plot all count this way."""

    furthest: dict[str, int] = field(default_factory=dict)  # trial id -> epoch

    def add(self, trial_id: str, epoch: int) -> None:
        self.furthest[trial_id] = max(self.furthest.get(trial_id, 0), epoch)

    def of(self, trial_id: str) -> int:
        return self.furthest.get(trial_id, 0)

    def __contains__(self, trial_id: object) -> bool:
        return trial_id in self.furthest

    def __len__(self) -> int:
        return len(self.furthest)

    @property
    def total(self) -> int:
        return sum(self.furthest.values())
