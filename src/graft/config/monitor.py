"""The ``monitor`` block: when a new data snapshot calls for retraining (docs/monitoring.md).

The monitor compares the snapshot ``data.source`` names with the reference statistics that
data-prep computed from the champion's train rows and export registered with it. The
thresholds are set so that a fresh sample of the *same* distribution stays below them: with
``min_rows`` rows or more, resampling noise alone puts a 10-bin PSI near ``9 / rows`` (0.018
at 500 rows, rarely above 0.06) and a cross-validated domain AUC within about 0.05 of 0.5.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from graft.config.base import Strict

RetrainWhen = Literal["always", "drift", "new_rows"]
MonitorReference = Literal["champion", "challenger"]
CompareRows = Literal["new_rows", "snapshot"]


class MonitorConfig(Strict):
    retrain_when: RetrainWhen = Field(
        default="always",
        description="always: retrain on every run (what the pipeline did before the monitor) | "
        "drift: when a feature's PSI, the label PSI or the domain classifier's AUC is above "
        "its threshold | new_rows: when the snapshot holds at least new_rows rows the "
        "champion's dataset did not (by content hash). Without a champion, or a champion "
        "without reference statistics, the monitor always says retrain",
    )
    reference: MonitorReference = Field(
        default="champion",
        description="the registered version whose training rows the snapshot is compared with: "
        "champion (what is served) | challenger (the latest retrain, promoted or not: export "
        "sets the alias on every version it registers). With champion, a shift that a "
        "retrain already saw, and whose challenger the gate refused, is flagged again at "
        "every run until a challenger is promoted; challenger asks only whether anything "
        "arrived since the last retrain",
    )
    psi_threshold: float = Field(
        default=0.2,
        gt=0.0,
        le=10.0,
        description="largest population stability index a feature may show (10 quantile bins "
        "of the train rows). The usual reading: below 0.1 stable, 0.1-0.2 a moderate shift, "
        "above 0.2 a shift worth acting on; noise alone stays under 0.1 at min_rows rows",
    )
    label_psi_threshold: float = Field(
        default=0.2,
        gt=0.0,
        le=10.0,
        description="largest PSI of the class shares (a label-prior shift), read as psi_threshold",
    )
    auc_threshold: float = Field(
        default=0.6,
        description="largest cross-validated AUC of a classifier telling train rows from the "
        "snapshot's rows (0.5: indistinguishable). It sees every feature together, so it "
        "catches a change in how features move together that leaves each one's histogram "
        "alone; 0.6 is about 7 standard errors above chance at min_rows rows (resamples of "
        "one distribution scored 0.46-0.54)",
    )
    compare: CompareRows = Field(
        default="new_rows",
        description="which snapshot rows the drift figures cover. new_rows: the rows the "
        "champion's prepared dataset did not hold (by content hash), so a shift in this week's "
        "rows is not diluted by the old rows the snapshot still carries; all rows when none is "
        "new. snapshot: every row, as before",
    )
    new_rows: int = Field(
        default=1000,
        ge=1,
        description="retrain_when=new_rows: how many rows the snapshot must hold that the "
        "champion's prepared dataset did not (exact content matches count as old)",
    )
    min_rows: int = Field(
        default=500,
        ge=20,
        description="fewest snapshot rows drift is judged on: below it the figures are "
        "reported but retrain_when=drift does not retrain, since sampling noise alone "
        "approaches the thresholds (a 10-bin PSI averages 9 / rows and, over many features, "
        "its largest value reached 0.12 at 200 rows)",
    )
    domain_max_rows: int = Field(
        default=2000,
        ge=100,
        description="snapshot rows (a seeded sample) the domain classifier compares with the "
        "reference's sample of at most 2,000 train rows, in 5-fold cross-validation",
    )
    report_top_features: int = Field(
        default=12,
        ge=1,
        description="features the report's PSI chart shows (the most drifted first); the "
        "histograms show the first four of them",
    )

    @field_validator("auc_threshold")
    @classmethod
    def _auc_threshold_above_chance(cls, value: float) -> float:
        if not 0.5 < value < 1.0:
            raise ValueError(
                f"{value} is not between 0.5 and 1 (exclusive): a domain classifier scores "
                "about 0.5 on a resample of the train rows' own distribution, so a threshold "
                "at or below 0.5 would retrain on noise, and its AUC never exceeds 1; use "
                "e.g. 0.6"
            )
        return value
