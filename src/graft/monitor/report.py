"""The drift report: one self-contained HTML page with the decision, its reason, the figures
against their thresholds and the plots (graft.io.html_page)."""

from __future__ import annotations

from pathlib import Path

from graft.config.monitor import MonitorConfig
from graft.data.reference import ReferenceStatistics
from graft.io.html_page import embedded_png, escape, html_table, page_head
from graft.monitor.figures import DriftFigures
from graft.monitor.plots import plot_domain_roc, plot_histograms, plot_labels, plot_psi
from graft.monitor.policy import Decision

REPORT_FILE = "drift_report.html"
HISTOGRAM_FEATURES = 4  # the most drifted features whose histograms the report draws


def write_drift_report(
    out: Path,
    decision: Decision,
    config: MonitorConfig,
    source: str,
    champion_version: str | None,
    reference: ReferenceStatistics | None,
    figures: DriftFigures | None,
) -> Path:
    """``out/drift_report.html`` (its plots in ``out/plots``); the page's path."""
    verdict = "refused" if decision.retrain else "passed"
    parts = [
        page_head(f"Drift report: {source}"),
        f"<p id='decision' class='{verdict}'><strong>{escape(decision.reason)}</strong></p>",
        _context(config, source, champion_version, reference, figures),
    ]
    if figures is not None:
        parts += [_summary(config, figures, decision), _features(config, figures, out)]
        parts += [_labels(figures, out), _domain(config, figures, out)]
    parts.append("</body></html>")
    path = out / REPORT_FILE
    path.write_text("".join(parts))
    return path


def _context(
    config: MonitorConfig,
    source: str,
    champion_version: str | None,
    reference: ReferenceStatistics | None,
    figures: DriftFigures | None,
) -> str:
    rows: list[list[object]] = [
        ["policy (monitor.retrain_when)", config.retrain_when],
        ["snapshot (data.source)", source],
        ["champion version", champion_version or "none"],
    ]
    if reference is not None:
        rows += [
            ["champion's train rows", reference.train_rows],
            ["champion's source", reference.source],
            ["champion's dataset hash", reference.dataset_hash],
        ]
    if figures is not None:
        compared = "the new rows" if figures.compared == "new_rows" else "all snapshot rows"
        rows += [
            ["snapshot rows", figures.snapshot_rows],
            ["new rows", figures.new_rows],
            ["figures computed on", f"{compared} ({figures.rows_compared:,})"],
        ]
    return html_table("context", ["", ""], rows)


def _summary(config: MonitorConfig, figures: DriftFigures, decision: Decision) -> str:
    domain = figures.domain
    rows: list[list[object]] = [
        ["largest feature PSI", figures.max_psi, config.psi_threshold],
        ["label PSI", figures.labels.psi, config.label_psi_threshold],
        ["label total variation", figures.labels.total_variation, "-"],
        ["domain classifier AUC", "n/a" if domain is None else domain.auc, config.auc_threshold],
        ["new rows", figures.new_rows, config.new_rows],
    ]
    triggers = "".join(f"<li>{escape(t)}</li>" for t in decision.triggers)
    above = f"<ul id='triggers'>{triggers}</ul>" if triggers else "<p>None above its threshold.</p>"
    return (
        "<h2>Figures</h2>"
        + html_table("figures", ["figure", "value", "threshold"], rows)
        + "<h3>Above their thresholds</h3>"
        + above
    )


def _features(config: MonitorConfig, figures: DriftFigures, out: Path) -> str:
    top = figures.most_drifted(config.report_top_features)
    rows = [[c.name, c.psi, c.ks_statistic, f"{c.ks_p_value:.2g}"] for c in top]
    psi_plot = plot_psi(top, config.psi_threshold, out / "plots" / "feature_psi.png")
    histograms = plot_histograms(top[:HISTOGRAM_FEATURES], out / "plots" / "histograms.png")
    return (
        "<h2>Features</h2><p>PSI over the train rows' decile bins (missing values a bin of "
        "their own); KS: the two-sample Kolmogorov-Smirnov statistic against the reference's "
        "sample of train rows, with its p-value (large snapshots make tiny shifts significant: "
        "the decision reads the PSI).</p>"
        + embedded_png(psi_plot, "PSI per feature")
        + html_table("feature-drift", ["feature", "PSI", "KS statistic", "KS p-value"], rows)
        + "<h3>Histograms of the most drifted features</h3>"
        + embedded_png(histograms, "histograms: train rows vs snapshot")
    )


def _labels(figures: DriftFigures, out: Path) -> str:
    labels = figures.labels
    plot = plot_labels(labels, out / "plots" / "labels.png")
    rows = [
        [name, before, after]
        for name, before, after in zip(
            labels.classes, labels.reference_shares, labels.snapshot_shares, strict=True
        )
    ]
    unseen = (
        f"<p class='refused'>Classes the train rows never had: {escape(', '.join(labels.unseen))}"
        "</p>"
        if labels.unseen
        else ""
    )
    return (
        "<h2>Labels</h2>"
        + embedded_png(plot, "class shares: train rows vs snapshot")
        + html_table("label-shift", ["class", "train share", "snapshot share"], rows)
        + unseen
    )


def _domain(config: MonitorConfig, figures: DriftFigures, out: Path) -> str:
    domain = figures.domain
    if domain is None:
        return "<h2>Domain classifier</h2><p>Too few rows to cross-validate it.</p>"
    plot = plot_domain_roc(domain, config.auc_threshold, out / "plots" / "domain_roc.png")
    return (
        "<h2>Domain classifier</h2>"
        f"<p id='domain-auc'>Gradient-boosted trees telling {domain.reference_rows:,} train rows "
        f"from {domain.snapshot_rows:,} snapshot rows, in 5-fold cross-validation: AUC "
        f"<strong>{domain.auc:.3f}</strong> (0.5: indistinguishable; threshold "
        f"{config.auc_threshold:g}). It sees all features at once, so it catches a change in "
        "how they vary together that no single histogram shows.</p>"
        + embedded_png(plot, "domain classifier ROC curve")
    )
