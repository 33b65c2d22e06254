"""Where a training run starts: the architecture, its starting weights and the phases it
trains through. The in-process finetune (graft.train.in_process) trains from one; the
comparisons that retrain the recipe (graft.evaluate.retrain) describe each of their arms by
one, so neither layer needs the other's type."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from graft.config import PhaseConfig
from graft.nn.models import GraftNet, ModelSpec, build_model


@dataclass(frozen=True)
class ModelStart:
    spec: ModelSpec
    init_state: dict[str, torch.Tensor]
    phases: list[PhaseConfig]

    def fresh_model(self) -> GraftNet:
        model = build_model(self.spec)
        model.load_state_dict(self.init_state)
        return model
