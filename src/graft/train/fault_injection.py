"""A worker failure that the resume tests inject, so they can prove a restarted fit continues
from its checkpoint. Only a FitRequest with ``fail_at_epoch`` set triggers it; nothing but those
tests sets it."""

from __future__ import annotations

from pathlib import Path


def inject_test_failure(fail_at_epoch: int | None, epoch: int, marker_dir: Path) -> None:
    """Resume tests only (FitRequest.fail_at_epoch): fail once when ``epoch`` starts; the
    marker file left in ``marker_dir`` lets the restarted workers through."""
    if fail_at_epoch is None or epoch != fail_at_epoch:
        return
    marker = marker_dir / f".failed-{fail_at_epoch}"
    if not marker.exists():
        marker.touch()
        raise RuntimeError(f"injected worker failure at epoch {epoch}")
