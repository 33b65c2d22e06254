"""The base of every config block."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """Base for every config block: unknown keys are errors, so typos never pass silently.

    NaN and infinities are refused too: the config crosses every process boundary as JSON,
    where pydantic writes them as null, so a value accepted here would fail in the next task.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)
