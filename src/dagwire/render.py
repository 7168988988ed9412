"""Report tables and their rendering: one `Table` type, drawn as HTML and as Markdown here only."""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from typing import Callable

def fmt_mean_std(decimals: int) -> Callable[[float, float], str]:
    def fmt(mean: float, std: float) -> str:
        if not math.isfinite(mean):
            return "–"
        s = f"{std:.{decimals}f}" if math.isfinite(std) else "–"
        return f"{mean:.{decimals}f} ± {s}"
    return fmt


def fmt_k(mean: float, std: float) -> str:
    """Parameter counts as the paper prints them: 166k ± 30k."""
    if not math.isfinite(mean):
        return "–"
    d = 0 if abs(mean) >= 1e5 else 1
    s = f"{std / 1e3:.{d}f}k" if math.isfinite(std) else "–"
    return f"{mean / 1e3:.{d}f}k ± {s}"


@dataclass
class Table:
    """A report table: header and rows of strings, rendered to HTML and Markdown alike."""

    title: str
    header: list[str]
    rows: list[list[str]]
    note: str = ""
    paper_columns: set[int] = field(default_factory=set)  # column indices holding the paper's numbers
    paper_rows: set[int] = field(default_factory=set)  # row indices holding the paper's numbers
    text_columns: int = 1  # leading columns of labels (left-aligned), the rest numbers


CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1200px;
       padding: 0 1em; color: #222; line-height: 1.4; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: right; white-space: nowrap; }
th { background: #f0f0f0; white-space: normal; } td.text, th.text { text-align: left; }
th.paper, td.paper, tr.paper td { background: #f7f3e8; color: #555; font-style: italic; }
.note { font-size: 0.85em; color: #555; max-width: 60em; }
.scroll { overflow-x: auto; }
figure { margin: 1em 0; } figure img { max-width: 100%; box-sizing: border-box; border: 1px solid #eee; }
figcaption { font-size: 0.85em; color: #444; max-width: 60em; }
.missing { color: #a33; } pre { background: #f6f6f6; padding: 0.6em; font-size: 0.8em; white-space: pre-wrap; }
ul.answer { font-size: 1.05em; max-width: 60em; } details { margin-top: 2em; }
td.error { white-space: normal; font-family: monospace; font-size: 0.9em; }
"""


def html_table(table: Table, wrap_from: int | None = None) -> str:
    """One table as HTML; paper columns and rows get the 'paper' class, columns ≥ wrap_from wrap text."""
    e = html.escape

    def attrs(k: int, cell: bool) -> str:
        names = (["paper"] if k in table.paper_columns else []) + (["text"] if k < table.text_columns else [])
        if cell and wrap_from is not None and k >= wrap_from:
            names.append("error")
        return f' class="{" ".join(names)}"' if names else ""

    head = "".join(f"<th{attrs(k, False)}>{e(h)}</th>" for k, h in enumerate(table.header))
    body = []
    for r, row in enumerate(table.rows):
        cells = "".join(f"<td{attrs(k, True)}>{e(c)}</td>" for k, c in enumerate(row))
        body.append(f'<tr{" class=paper" if r in table.paper_rows else ""}>{cells}</tr>')
    return (f"<h2>{e(table.title)}</h2>\n<div class=scroll><table><thead><tr>{head}</tr></thead>\n<tbody>"
            + "\n".join(body) + "</tbody></table></div>\n" + (f"<p class=note>{e(table.note)}</p>\n" if table.note else ""))


def md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def md_table(table: Table) -> str:
    """One table as GitHub Markdown; paper cells in italics."""
    lines = [f"## {table.title}", "", "| " + " | ".join(md_cell(h) for h in table.header) + " |",
             "|" + "|".join(" --- " for _ in table.header) + "|"]
    for r, row in enumerate(table.rows):
        cells = [(f"*{md_cell(c)}*" if (k in table.paper_columns or r in table.paper_rows) and c not in ("", "–")
                  else md_cell(c)) for k, c in enumerate(row)]
        lines.append("| " + " | ".join(cells) + " |")
    if table.note:
        lines += ["", table.note]
    return "\n".join(lines) + "\n"
