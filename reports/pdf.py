"""PDF pages: text pages (title, summary) and tables drawn as text, paginated to fit A4 landscape.

Tables are drawn line by line rather than with ``ax.table`` so multi-line cells, bold cells and page
breaks are under control and the text stays extractable (TrueType fonts) for checks with pdftotext.
"""

from __future__ import annotations

import textwrap

import matplotlib

matplotlib.use("Agg")
matplotlib.rcParams["pdf.fonttype"] = 42

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from reports.tableformat import Table  # noqa: E402

PAGE_W, PAGE_H = 11.69, 8.27  # inches, A4 landscape
MARGIN = 0.5
CHAR_EM = 0.6  # mean glyph width of DejaVu Sans in ems, slightly generous so columns never touch
LINE = 1.3  # line height in font sizes
PAD_CHARS = 2  # space between columns, in characters
TEXT_CHARS = 135  # characters per line of a text page at 9.5 pt


def text_pages(title: str, blocks: list[tuple[str, str]]) -> list[Figure]:
    """A title and (heading, paragraph) blocks, wrapped to the page width and continued on further pages
    rather than run off the bottom; '- ' lines are list items with hanging indents."""
    pages: list[Figure] = []
    bottom = MARGIN / PAGE_H

    def page() -> float:
        fig = plt.figure(figsize=(PAGE_W, PAGE_H))
        shown = title + (" (continued)" if pages else "")
        fig.text(MARGIN / PAGE_W, 1 - MARGIN / PAGE_H, shown, fontsize=18, weight="bold", va="top")
        pages.append(fig)
        return 1 - (MARGIN + 0.6) / PAGE_H

    y = page()
    for heading, body in blocks:
        lines = [line for paragraph in body.split("\n") for line in _wrapped(paragraph)]
        if y - (0.3 + 0.19 * min(len(lines), 3)) / PAGE_H < bottom:  # a heading never ends a page
            y = page()
        if heading:
            pages[-1].text(MARGIN / PAGE_W, y, heading, fontsize=11, weight="bold", va="top")
            y -= 0.3 / PAGE_H
        for line in lines:
            if y - 0.19 / PAGE_H < bottom:
                y = page()
            pages[-1].text(MARGIN / PAGE_W, y, line, fontsize=9.5, va="top")
            y -= 0.19 / PAGE_H
        y -= 0.12 / PAGE_H
    return pages


def _wrapped(paragraph: str) -> list[str]:
    indent = "    " if paragraph.startswith("- ") else ""
    return textwrap.wrap(paragraph, TEXT_CHARS, subsequent_indent=indent) or [""]


def table_pages(table: Table, max_font: float = 9.0, min_font: float = 5.5) -> list[Figure]:
    """The table over as many pages as it needs; the font shrinks (down to min_font) to fit the width."""
    columns = list(table.display.columns)
    cells = [[table.cell(r, c).split("\n") for c in columns] for r in range(len(table.display))]
    widths = [
        max([len(c), *(len(line) for row in cells for line in row[i])]) + PAD_CHARS for i, c in enumerate(columns)
    ]
    usable_w = (PAGE_W - 2 * MARGIN) * 72
    font = max(min_font, min(max_font, usable_w / (sum(widths) * CHAR_EM)))
    line_h = font * LINE / 72 / PAGE_H  # figure fraction
    notes = [line for note in table.notes for line in textwrap.wrap(note, 150)]
    top = 1 - (MARGIN + 0.45) / PAGE_H
    bottom = (MARGIN + 0.17 * len(notes)) / PAGE_H
    pages, start = [], 0
    while start < len(cells) or not pages:
        fig = plt.figure(figsize=(PAGE_W, PAGE_H))
        title = table.title + (" (continued)" if pages else "")
        fig.text(MARGIN / PAGE_W, 1 - MARGIN / PAGE_H, title, fontsize=13, weight="bold", va="top")
        y = _draw_row(fig, top, [[c] for c in columns], widths, font, line_h, bold_all=True)
        fig.add_artist(plt.Line2D([MARGIN / PAGE_W, 1 - MARGIN / PAGE_W], [y, y], color="black", lw=0.8))
        y -= line_h * 0.4
        end = start
        while end < len(cells):
            height = max(len(part) for part in cells[end]) * line_h + line_h * 0.4
            if y - height < bottom and end > start:
                break
            if end % 2 == 1:
                fig.add_artist(
                    plt.Rectangle(
                        (MARGIN / PAGE_W, y - height + line_h * 0.2),
                        1 - 2 * MARGIN / PAGE_W,
                        height,
                        color="0.93",
                        zorder=0,
                    )
                )
            bold = {columns.index(c) for r, c in table.bold if r == end}
            y = _draw_row(fig, y, cells[end], widths, font, line_h, bold_cols=bold) - line_h * 0.4
            end += 1
        for i, line in enumerate(notes):
            fig.text(MARGIN / PAGE_W, (MARGIN + 0.17 * (len(notes) - 1 - i)) / PAGE_H, line, fontsize=8)
        pages.append(fig)
        start = end
    return pages


def _draw_row(
    fig: Figure,
    y: float,
    parts: list[list[str]],
    widths: list[int],
    font: float,
    line_h: float,
    bold_all: bool = False,
    bold_cols: set[int] | None = None,
) -> float:
    """Draws one row whose cells may span several lines; returns the y below it."""
    x = MARGIN / PAGE_W
    for i, lines in enumerate(parts):
        weight = "bold" if bold_all or i in (bold_cols or set()) else "normal"
        for k, line in enumerate(lines):
            fig.text(x, y - k * line_h, line, fontsize=font, weight=weight, va="top")
        x += widths[i] * CHAR_EM * font / 72 / PAGE_W
    return y - max(len(lines) for lines in parts) * line_h
