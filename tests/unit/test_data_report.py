"""report.html: the sections a person reads, with figures embedded."""

import json
from pathlib import Path

from graft.config import DataConfig
from graft.data.prepare import prepare_dataset


def test_report_has_tables_figures_and_findings(tmp_path: Path) -> None:
    prepare_dataset(DataConfig(source="builtin:digits"), 0, tmp_path)
    page = (tmp_path / "report.html").read_text()
    for heading in (
        "Warnings",
        "Split summary",
        "Class counts",
        "Feature values",
        "Sample gallery",
        "Missing values",
        "Duplicates",
        "Leakage and quality",
    ):
        assert f"{heading}</h2>" in page, heading
    assert page.count("data:image/png;base64,") == 3  # class chart, histogram, gallery
    report = json.loads((tmp_path / "report.json").read_text())
    counts = report["splits"]["class_counts"]
    total = {c: sum(counts[s].get(c, 0) for s in counts) for c in counts["train"]}
    dropped = report["near_duplicates"]["found"]
    # digits' true class counts, less near duplicates dropped across splits
    truth = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    assert sum(truth) - sum(total.values()) == dropped
    assert all(0 <= truth[int(c)] - n <= dropped for c, n in total.items())
    assert "<td>0</td><td>" in page and "near duplicates across splits" in page
    assert "single-feature leakage check: not run (image data)" in page
