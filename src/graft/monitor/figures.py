"""Every drift figure of one snapshot against the champion's reference, in one place."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from graft.config.monitor import MonitorConfig
from graft.data.reference import ReferenceStatistics
from graft.monitor.domain_classifier import DomainCheck, domain_auc
from graft.monitor.drift import ColumnDrift, LabelShift, column_drift, label_shift
from graft.monitor.snapshot import Snapshot, count_new_rows


@dataclass(frozen=True)
class DriftFigures:
    snapshot_rows: int
    new_rows: int  # distinct snapshot rows the champion's prepared dataset did not hold
    columns: list[ColumnDrift]
    labels: LabelShift
    domain: DomainCheck | None  # None: too few rows for its cross-validation
    # the rows the figures cover: the new rows (monitor.compare=new_rows and some are new),
    # else all snapshot rows (None: all of them)
    compared_rows: int | None = None
    compared: str = "snapshot"  # "new_rows" or "snapshot"

    @property
    def rows_compared(self) -> int:
        return self.snapshot_rows if self.compared_rows is None else self.compared_rows

    @property
    def max_psi(self) -> float:
        return max((c.psi for c in self.columns), default=0.0)

    def most_drifted(self, count: int) -> list[ColumnDrift]:
        """The ``count`` columns of largest PSI, largest first."""
        return sorted(self.columns, key=lambda c: c.psi, reverse=True)[:count]

    def summary(self) -> dict[str, float]:
        """The headline figures, flat (MLflow metrics, the stage's output, the CLI's table)."""
        figures = {
            "snapshot_rows": float(self.snapshot_rows),
            "new_rows": float(self.new_rows),
            "compared_rows": float(self.rows_compared),
            "max_feature_psi": self.max_psi,
            "label_psi": self.labels.psi,
            "label_total_variation": self.labels.total_variation,
        }
        if self.domain is not None:
            figures["domain_auc"] = self.domain.auc
        return figures


def measure_drift(
    reference: ReferenceStatistics, snapshot: Snapshot, config: MonitorConfig, seed: int
) -> DriftFigures:
    """Columns and labels on the compared rows (:func:`compared_rows`), the domain classifier
    on those of them that are not copies of the reference's sampled rows: a row in both
    classes is one the trees learn by heart in one fold and get wrong in the next, which pulls
    the AUC below 0.5 (0.14 on a snapshot that is the training file itself) and would hide a
    drift among the other rows. The snapshot must be comparable
    (graft.monitor.snapshot.check_comparable)."""
    rows, compared = compared_rows(reference, snapshot.hashes, config)
    kept = snapshot.take(rows)
    unsampled = ~np.isin(kept.hashes, reference.sample_hash)
    return DriftFigures(
        snapshot_rows=snapshot.rows,
        new_rows=count_new_rows(reference, snapshot.hashes),
        columns=column_drift(reference, kept.view),
        labels=label_shift(reference.label_counts, kept.labels.tolist()),
        domain=domain_auc(
            reference.sample, kept.view.values[unsampled], config.domain_max_rows, seed
        ),
        compared_rows=len(rows),
        compared=compared,
    )


def compared_rows(
    reference: ReferenceStatistics, hashes: np.ndarray, config: MonitorConfig
) -> tuple[np.ndarray, str]:
    """The positions of the snapshot rows the figures cover and which they are: with
    ``monitor.compare=new_rows``, those whose content hash no row of the champion's prepared
    dataset had ("new_rows"); every row ("snapshot") with ``compare=snapshot``, a reference
    without row hashes, or no new row (a rerun on the same data is compared as a whole)."""
    everything = np.arange(len(hashes))
    if config.compare != "new_rows" or len(reference.row_hash) == 0:
        return everything, "snapshot"
    new = np.flatnonzero(~np.isin(hashes, reference.row_hash))
    if len(new) == 0:
        return everything, "snapshot"
    return new, "new_rows"
