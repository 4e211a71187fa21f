"""A report table and its file forms: Markdown and LaTeX show the formatted cells, CSV the raw numbers;
and how cells are formatted (mean ± std with interval, p-values, metric names).

Markdown and LaTeX are written here rather than by pandas (which would need tabulate and jinja2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from reports.stats import MIN_SEEDS, Summary

DAGGER = "†"
FEW_NOTE = f"{DAGGER} fewer than {MIN_SEEDS} seeds: spread and interval are unreliable (n = seeds)."


@dataclass
class Table:
    """``display`` holds strings (one line per cell part, joined by newlines), ``data`` the numbers behind them."""

    name: str
    title: str
    display: pd.DataFrame
    data: pd.DataFrame
    bold: set[tuple[int, str]] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)

    def cell(self, row: int, column: str) -> str:
        return str(self.display.iloc[row][column])


def to_markdown(table: Table) -> str:
    columns = list(table.display.columns)
    lines = [f"### {table.title}", "", "| " + " | ".join(_md_escape(c) for c in columns) + " |"]
    lines.append("|" + "|".join("---" for _ in columns) + "|")
    for row in range(len(table.display)):
        cells = []
        for column in columns:
            text = _md_escape(table.cell(row, column).replace("\n", " "))
            cells.append(f"**{text}**" if (row, column) in table.bold and text else text)
        lines.append("| " + " | ".join(cells) + " |")
    lines.extend(["", *(f"{note}  " for note in table.notes)])
    return "\n".join(lines).rstrip() + "\n"


def to_latex(table: Table) -> str:
    columns = list(table.display.columns)
    lines = [
        "% " + table.title,
        "\\begin{tabular}{" + "l" * len(columns) + "}",
        "\\hline",
        " & ".join(_tex_escape(c) for c in columns) + " \\\\",
        "\\hline",
    ]
    for row in range(len(table.display)):
        cells = []
        for column in columns:
            text = _tex_escape(table.cell(row, column).replace("\n", " "))
            cells.append(f"\\textbf{{{text}}}" if (row, column) in table.bold and text else text)
        lines.append(" & ".join(cells) + " \\\\")
    lines.extend(["\\hline", "\\end{tabular}", *(f"% {_tex_escape(note)}" for note in table.notes)])
    return "\n".join(lines) + "\n"


def write_table(table: Table, folder: Path, formats: tuple[str, ...]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    writers = {
        "md": lambda p: p.write_text(to_markdown(table), encoding="utf-8"),
        "tex": lambda p: p.write_text(to_latex(table), encoding="utf-8"),
        "csv": lambda p: table.data.to_csv(p, index=False),
    }
    for fmt in formats:
        if fmt in writers:
            path = folder / f"{table.name}.{fmt}"
            writers[fmt](path)
            written.append(path)
    return written


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


_TEX = {
    "\\": "\\textbackslash{}",
    "&": "\\&",
    "%": "\\%",
    "$": "\\$",
    "#": "\\#",
    "_": "\\_",
    "{": "\\{",
    "}": "\\}",
    "~": "\\textasciitilde{}",
    "^": "\\textasciicircum{}",
    "±": "$\\pm$",
    "†": "$^\\dagger$",
    "–": "--",
}


def _tex_escape(text: str) -> str:
    return "".join(_TEX.get(ch, ch) for ch in text)


def format_cell(s: Summary, mark: str = "", lines: int = 2) -> str:
    """'mean ± std' then '[CI] n=..'; one seed shows the value alone, and small n gets a dagger."""
    if s.n == 0:
        return "–"
    few = DAGGER if s.few else ""
    if s.n == 1:
        return f"{s.mean:.3f}{mark}\nn=1{few}" if lines == 2 else f"{s.mean:.3f}{mark} (n=1){few}"
    if lines == 2:
        return f"{s.mean:.3f} ± {s.std:.3f}{mark}\n[{s.ci_low:.3f}, {s.ci_high:.3f}] n={s.n}{few}"
    return f"{s.mean:.3f} ± {s.std:.3f}{mark} (n={s.n}){few}"


def mean_std(s: Summary, scale: float, fmt: str = ".2f") -> str:
    if s.n == 0:
        return "–"
    if s.n == 1:
        return f"{s.mean / scale:{fmt}}"
    return f"{s.mean / scale:{fmt}} ± {s.std / scale:{fmt}}"


def short_metric(metric: str) -> str:
    return metric.split(".")[-1].replace("balanced_accuracy", "balanced acc.").replace("_macro", " (macro)")


def short_with_protocol(metric: str) -> str:
    return f"{metric.split('.')[0]} {short_metric(metric)}"


def num(value: float, fmt: str) -> str:
    return f"{value:{fmt}}" if math.isfinite(value) else "–"


def p_value(value: float) -> str:
    if not math.isfinite(value):
        return "–"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def wrap(text: str, width: int) -> str:
    words, lines, line = text.split(), [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "\n".join([*lines, line])
