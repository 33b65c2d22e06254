"""report.html: the data report a person reads before trusting a model trained on the data.

One self-contained page (figures embedded as base64 PNG): split summary, class counts per
split, each class's share of each split against the target (the stratification), a
class-count chart and feature histograms, a sample gallery for images, the
missing-value table, duplicates, leakage and quality findings.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from graft.data.near_duplicates import MIN_FEATURES, NearDuplicateReport
from graft.data.quality import QualityReport, column_names
from graft.data.sources import RawDataset
from graft.data.splits import SPLITS, SplitResult

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from graft.data.manifest import DataManifest

GALLERY_PER_CLASS = 6
HISTOGRAM_FEATURES = 12
# strategies whose rows (or groups) are assigned one by one from a hash: shares are binomial
KEYED = ("random", "stratified", "group", "hash")


@dataclass
class SplitSummary:
    strategy: str
    rows: dict[str, int]
    class_counts: dict[str, dict[str, int]]  # split -> class name -> rows
    dropped: dict[str, int]  # reason -> rows
    time_ranges: dict[str, list[float]] = field(default_factory=dict)
    groups: dict[str, int] = field(default_factory=dict)  # split -> distinct groups
    groups_in_several_splits: int = 0
    # the stratification: split -> share of the rows it should hold (empty: not given), and
    # class -> split -> the share of that class's rows the split holds
    target_shares: dict[str, float] = field(default_factory=dict)
    class_shares: dict[str, dict[str, float]] = field(default_factory=dict)
    # split -> the largest |class share - target share| over the classes
    largest_share_deviation: dict[str, float] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        raw: RawDataset,
        result: SplitResult,
        dropped: dict[str, np.ndarray],
        target_shares: dict[str, float] | None = None,
    ) -> SplitSummary:
        counts = {}
        for name in SPLITS:
            labels, n = np.unique(raw.y[result.indices[name]], return_counts=True)
            counts[name] = {raw.class_names[int(c)]: int(k) for c, k in zip(labels, n, strict=True)}
        summary = cls(
            strategy=result.strategy,
            rows={name: len(result.indices[name]) for name in SPLITS},
            class_counts=counts,
            dropped={reason: len(rows) for reason, rows in dropped.items()},
            time_ranges={name: list(span) for name, span in result.time_ranges.items()},
            target_shares=dict(target_shares or {}),
        )
        summary._add_class_shares()
        if raw.groups is not None:
            members = {name: set(raw.groups[result.indices[name]].tolist()) for name in SPLITS}
            summary.groups = {name: len(g) for name, g in members.items()}
            seen: dict[str, int] = {}
            for groups in members.values():
                for group in groups:
                    seen[group] = seen.get(group, 0) + 1
            summary.groups_in_several_splits = sum(1 for n in seen.values() if n > 1)
        return summary

    def _add_class_shares(self) -> None:
        names = sorted({c for counts in self.class_counts.values() for c in counts})
        for name in names:
            rows = sum(self.class_counts[s].get(name, 0) for s in SPLITS)
            self.class_shares[name] = {s: self.class_counts[s].get(name, 0) / rows for s in SPLITS}
        if self.target_shares and names:
            self.largest_share_deviation = {
                s: max(
                    abs(shares[s] - self.target_shares[s]) for shares in self.class_shares.values()
                )
                for s in SPLITS
            }

    def class_rows(self, name: str) -> int:
        return sum(self.class_counts[s].get(name, 0) for s in SPLITS)


def _png(figure: Figure) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    plt.close(figure)
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f"<img alt='figure' src='data:image/png;base64,{encoded}'>"


def _class_count_chart(summary: SplitSummary) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted({c for counts in summary.class_counts.values() for c in counts})
    figure, ax = plt.subplots(figsize=(max(4.0, 0.6 * len(names) + 2), 3))
    width = 0.8 / len(SPLITS)
    for i, split in enumerate(SPLITS):
        values = [summary.class_counts[split].get(n, 0) for n in names]
        ax.bar(np.arange(len(names)) + i * width, values, width, label=split)
    ax.set_xticks(np.arange(len(names)) + width, names, rotation=45, ha="right")
    ax.set_ylabel("rows")
    ax.set_title("Rows per class and split")
    ax.legend()
    return _png(figure)


def _feature_histograms(x: np.ndarray, names: list[str]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    flat = x.reshape(len(x), -1)
    if flat.shape[1] > HISTOGRAM_FEATURES:  # images: the distribution of all pixel values
        columns, titles = [flat.ravel()], ["all feature values"]
    else:
        columns, titles = [flat[:, i] for i in range(flat.shape[1])], names
    cols = min(4, len(columns))
    rows = (len(columns) + cols - 1) // cols
    figure, axes = plt.subplots(rows, cols, figsize=(3 * cols, 2.2 * rows), squeeze=False)
    for ax, values, title in zip(axes.ravel(), columns, titles, strict=False):
        ax.hist(values[np.isfinite(values)], bins=30)
        ax.set_title(title, fontsize=9)
    for ax in axes.ravel()[len(columns) :]:
        ax.axis("off")
    figure.suptitle("Feature value histograms (all rows)")
    return _png(figure)


def _gallery(raw: RawDataset) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = np.unique(raw.y)
    figure, axes = plt.subplots(
        len(classes),
        GALLERY_PER_CLASS,
        figsize=(GALLERY_PER_CLASS * 0.9, len(classes) * 0.9),
        squeeze=False,
    )
    for row, label in enumerate(classes):
        members = np.flatnonzero(raw.y == label)[:GALLERY_PER_CLASS]
        for col, ax in enumerate(axes[row]):
            ax.axis("off")
            if col < len(members):
                image = raw.x[members[col]]
                ax.imshow(image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0) / 255.0)
        axes[row][0].set_title(raw.class_names[int(label)], fontsize=8, loc="left")
    figure.suptitle("Sample gallery: first examples of each class")
    return _png(figure)


def _table(header: list[str], rows: Sequence[Sequence[object]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def write_report(
    path: Path,
    manifest: DataManifest,
    quality: QualityReport,
    near: NearDuplicateReport,
    summary: SplitSummary,
    raw: RawDataset,
    x: np.ndarray,
    gallery: RawDataset | None = None,
) -> None:
    """``gallery``: the rows whose images the sample gallery shows (default ``raw``); data-prep
    passes the train rows, so no test image sits in the dataset artifact's report."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>Graft data report</title>"
        "<style>body{font-family:sans-serif;margin:2em;max-width:70em}td,th{padding:4px 10px;"
        "border-bottom:1px solid #ddd;text-align:left}.warn{color:#b00020}</style></head><body>",
        _summary_section(manifest),
        _split_section(manifest, summary),
        _class_section(summary, quality),
        _stratification_section(summary),
        _feature_section(raw, gallery),
        _missing_values_section(manifest, quality, len(raw.x)),
        _duplicates_section(manifest, near),
        _leakage_section(quality),
        "</body></html>",
    ]
    path.write_text("".join(parts))


def _summary_section(manifest: DataManifest) -> str:
    parts = [
        "<h1>Data report</h1>",
        f"<p>source <code>{html.escape(manifest.source)}</code>, hash "
        f"<code>{manifest.dataset_hash}</code>, {manifest.num_rows} rows, {manifest.kind}, "
        f"input shape {manifest.input_shape}, normalization "
        f"<code>{html.escape(manifest.normalize)}</code> (fitted on train only)</p>",
    ]
    if manifest.warnings:
        items = "".join(f"<li>{html.escape(w)}</li>" for w in manifest.warnings)
        parts.append(f"<h2 class='warn'>Warnings</h2><ul class='warn' id='warnings'>{items}</ul>")
    return "".join(parts)


def _split_section(manifest: DataManifest, summary: SplitSummary) -> str:
    parts = [
        f"<h2>Split summary</h2><p>strategy <code>{summary.strategy}</code></p>",
        _table(["split", "rows"], [[s, summary.rows[s]] for s in SPLITS]),
    ]
    dropped = [[reason, n] for reason, n in summary.dropped.items()]
    dropped.insert(0, ["exact duplicates", manifest.duplicates.exact_duplicates_dropped])
    parts.append(_table(["rows removed", "count"], dropped))
    if summary.time_ranges:
        parts.append(
            _table(
                ["split", "first time", "last time"],
                [[s, *summary.time_ranges[s]] for s in SPLITS if s in summary.time_ranges],
            )
        )
    if summary.groups:
        parts.append(
            _table(["split", "distinct groups"], [[s, summary.groups[s]] for s in SPLITS])
            + f"<p>groups present in more than one split: {summary.groups_in_several_splits}</p>"
        )
    return "".join(parts)


def _class_section(summary: SplitSummary, quality: QualityReport) -> str:
    names = sorted({c for counts in summary.class_counts.values() for c in counts})
    class_rows = [[n] + [summary.class_counts[s].get(n, 0) for s in SPLITS] for n in names]
    parts = ["<h2>Class counts</h2>", _table(["class", *SPLITS], class_rows)]
    if quality.imbalance is not None:
        parts.append(
            f"<p id='imbalance'>largest/smallest class = {quality.imbalance.ratio}, minority "
            f"share {quality.imbalance.minority_share:.2%}: "
            f"{html.escape(quality.imbalance.suggestion)}</p>"
        )
    parts.append(_class_count_chart(summary))
    return "".join(parts)


def binomial_spread(share: float, rows: int) -> float:
    """Two standard deviations of the share of ``rows`` rows that a split drawing each row
    with probability ``share`` holds: about 95% of classes fall within it."""
    return 2.0 * float(np.sqrt(share * (1.0 - share) / max(rows, 1)))


def _share_cells(summary: SplitSummary, shares: dict[str, float], rows: int) -> list[str]:
    cells = []
    for split in SPLITS:
        cells.append(f"{shares[split]:.2%}")
        if summary.target_shares:
            target = summary.target_shares[split]
            deviation = 100 * (shares[split] - target)
            spread = 100 * binomial_spread(target, rows)
            cells.append(f"{deviation:+.2f} pp (±{spread:.2f})")
    return cells


def _stratification_section(summary: SplitSummary) -> str:
    """Each class's share of each split, against the target share and its expected spread."""
    header = ["class", "rows"]
    for split in SPLITS:
        header.append(f"{split} share")
        if summary.target_shares:
            header.append(f"{split} vs {summary.target_shares[split]:.0%} (±2σ)")
    total = sum(summary.rows.values())
    body = [
        [name, summary.class_rows(name), *_share_cells(summary, shares, summary.class_rows(name))]
        for name, shares in summary.class_shares.items()
    ]
    overall = {s: summary.rows[s] / max(total, 1) for s in SPLITS}
    body.append(["all classes", total, *_share_cells(summary, overall, total)])
    parts = ["<h2>Stratification</h2>", _table(header, body)]
    if summary.strategy in KEYED:
        parts.append(
            "<p id='stratification'>each row's split (each group's, for split: group) is "
            "drawn from its content hash and the split seed (splits.json records it), so it "
            "stays put in every snapshot of the data; the class shares match the targets in "
            "expectation, not exactly: a class of n rows lands within "
            "±2σ = ±2&radic;(f(1&minus;f)/n) of a split's share f about 95% of the time "
            "(±1 pp for a 15% split needs about 5,000 rows a class)"
        )
    else:
        parts.append(
            "<p id='stratification'>the split follows its order (time or file order), so the "
            "class shares are not drawn: a large deviation means the classes drift along it"
        )
    if summary.largest_share_deviation:
        largest = ", ".join(
            f"{s} {100 * v:.2f} pp" for s, v in summary.largest_share_deviation.items()
        )
        parts[-1] += f"; largest deviation of a class share: {largest}"
    parts[-1] += "</p>"
    return "".join(parts)


def _feature_section(raw: RawDataset, gallery: RawDataset | None) -> str:
    feature_names = column_names(raw.x.reshape(len(raw.x), -1).shape[1], raw.feature_names)
    section = "<h2>Feature values</h2>" + _feature_histograms(raw.x, feature_names)
    if raw.kind == "image":
        section += "<h2>Sample gallery</h2>" + _gallery(raw if gallery is None else gallery)
    return section


def _missing_values_section(manifest: DataManifest, quality: QualityReport, rows: int) -> str:
    if not quality.missing_values:
        return "<h2>Missing values</h2><p>none</p>"
    section = "<h2>Missing values</h2>" + _table(
        ["column", "missing", "share"],
        [[c, n, f"{n / rows:.2%}"] for c, n in quality.missing_values.items()],
    )
    if manifest.missing_fill is not None:
        section += "<p>filled with the train median; indicator columns added</p>"
    return section


def _duplicates_section(manifest: DataManifest, near: NearDuplicateReport) -> str:
    parts = [
        "<h2>Duplicates</h2>"
        f"<p>exact duplicates dropped before splitting: "
        f"{manifest.duplicates.exact_duplicates_dropped} (with conflicting labels: "
        f"{manifest.duplicates.conflicting_labels})</p>"
        + (
            f"<p id='near-duplicates'>near duplicates across splits (similarity &ge; "
            f"{near.threshold}): {near.found}, policy <code>{near.policy}</code>"
            + (
                ""
                if near.sampled_rows is None
                else f" (approximate: among a seeded sample of {near.sampled_rows} rows)"
            )
            + "</p>"
            if near.checked
            else "<p id='near-duplicates'>near duplicates: not checked (fewer than "
            f"{MIN_FEATURES} features, where neighbours look alike by chance)</p>"
        )
    ]
    if near.by_pair:
        parts.append(_table(["pair", "found"], [[k, v] for k, v in near.by_pair.items()]))
    if near.examples:
        parts.append(
            _table(
                ["split", "row id", "partner split", "partner row id", "similarity"],
                [
                    [e.split, e.row_id, e.partner_split, e.partner_row_id, f"{e.similarity:.4f}"]
                    for e in near.examples
                ],
            )
        )
    return "".join(parts)


def _leakage_section(quality: QualityReport) -> str:
    parts = ["<h2>Leakage and quality</h2>"]
    scope = f" ({html.escape(quality.leakage_scope)})" if quality.leakage_scope else ""
    if not quality.leakage_checked:
        parts.append(f"<p>single-feature leakage check: not run{scope or ' (image data)'}</p>")
    elif quality.leakage:
        parts.append(
            f"<p class='warn'>features that alone predict the label{scope}:</p>"
            + _table(
                ["feature", "val balanced accuracy"],
                [[f.feature, f.val_balanced_accuracy] for f in quality.leakage],
            )
        )
    else:
        parts.append(f"<p>no single feature predicts the label alone{scope}</p>")
    constant = quality.constant_columns
    parts.append(
        f"<p>constant columns: {len(constant)}"
        + (": " + html.escape(", ".join(constant[:30])) if constant else "")
        + "</p>"
    )
    return "".join(parts)
