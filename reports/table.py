"""A report table and its file forms: Markdown and LaTeX show the formatted cells, CSV the raw numbers.

Markdown and LaTeX are written here rather than by pandas (which would need tabulate and jinja2).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd


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
