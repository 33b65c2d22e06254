"""Self-contained HTML report pages (evaluation, tune): one style, tables, PNGs inlined.

A page carries its plots as base64 ``<img>`` so that it reads the same in MLflow, in the KFP
UI (an HTML output artifact) and from a plain folder.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable
from pathlib import Path

STYLE = (
    "body{font-family:sans-serif;margin:2em;max-width:1100px}"
    "table{border-collapse:collapse;margin:0.5em 0 1.5em}"
    "td,th{padding:4px 10px;border-bottom:1px solid #ddd;text-align:left}"
    "td.num{text-align:right;font-variant-numeric:tabular-nums}"
    ".passed{color:#0a7a2f}.refused{color:#b00020}img{max-width:100%;border:1px solid #eee}"
)


def escape(value: object) -> str:
    return html.escape(str(value))


def number(value: float) -> str:
    return f"{value:.4f}"


def html_table(table_id: str, header: Iterable[str], rows: Iterable[Iterable[object]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = []
        for cell in row:
            if isinstance(cell, float):
                cells.append(f"<td class='num'>{number(cell)}</td>")
            elif isinstance(cell, int):
                cells.append(f"<td class='num'>{cell}</td>")
            else:
                cells.append(f"<td>{escape(cell)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (
        f"<table id='{table_id}'><thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def embedded_png(path: Path, alt: str) -> str:
    payload = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"<img alt='{escape(alt)}' src='data:image/png;base64,{payload}'>"


def page_head(title: str) -> str:
    """The page up to and including its ``<h1>``; the caller closes ``</body></html>``."""
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>"
        f"<h1>{escape(title)}</h1>"
    )
