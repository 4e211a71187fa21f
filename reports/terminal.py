"""``bench compare``: the report's comparison tables as fixed-width text for a terminal. It renders the
very Table objects the PDF draws (``analyse``), so the terminal and the report never disagree."""

from __future__ import annotations

from dataclasses import replace

from reports.baselines import NOT_LOGGED
from reports.build import ReportData, analyse
from reports.collect import finished
from reports.summary import SMOKE_WARNING
from reports.tableformat import Table, short_metric

GAP = "  "
BEST = " (best)"  # the terminal has no bold: the cell the tie rule names best


def compare_text(tracking_uri: str, experiments: list[str] | None) -> str:
    """Methods side by side per dataset and protocol: mean ± std, 95% interval and seeds per headline metric
    (accuracy, balanced accuracy), display names, the majority-class and chance rows, the table notes.
    Raises ValueError for an unknown experiment or when no run finished."""
    return comparison_text(analyse(tracking_uri, experiments))


def comparison_text(data: ReportData) -> str:
    """``compare_text`` for analysed runs."""
    if finished(data.runs).empty:
        names = ", ".join(sorted(data.runs["experiment"].unique()))
        raise ValueError(f"no finished runs in experiment(s) {names} ({len(data.runs)} run(s), none FINISHED)")
    tables = [t for t in data.tables if t.name.startswith("comparison_")]
    if not tables:
        raise ValueError("no finished run logged test metrics: nothing to compare")
    blocks = [SMOKE_WARNING] if data.smoke else []
    for table in tables:
        protocol = table.name.removeprefix("comparison_")
        wanted = [short_metric(m) for m in data.headline if m.startswith(f"{protocol}.")]
        metrics = [c for c in wanted if c in table.display] or list(table.display.columns[3:])
        for setting in dict.fromkeys(table.display["dataset"]):
            blocks.append(
                f"{setting}: {protocol} protocol, test split\n"
                + table_text(_rows_of(table, setting), ["batch", "method", *metrics])
            )
    missing = sorted(set(finished(data.runs)["setting"]) - set(data.baselines["setting"]))
    if missing:
        blocks.append(f"{NOT_LOGGED} for {', '.join(missing)}.")
    blocks.append("\n".join(dict.fromkeys(note for t in tables for note in t.notes)))
    return "\n\n".join(blocks)


def _rows_of(table: Table, setting: str) -> Table:
    """The table's rows of one setting, renumbered so the bold cells stay on their rows."""
    rows = [i for i, s in enumerate(table.display["dataset"]) if s == setting]
    new = {old: k for k, old in enumerate(rows)}
    bold = {(new[r], c) for r, c in table.bold if r in new}
    return replace(table, display=table.display.iloc[rows].reset_index(drop=True), bold=bold)


def table_text(table: Table, columns: list[str]) -> str:
    """Fixed-width columns under a header and a rule; a cell's lines stack, so a row may take several."""
    cells = [[_cell(table, r, c).split("\n") for c in columns] for r in range(len(table.display))]
    widths = [max([len(c), *(len(line) for row in cells for line in row[i])]) for i, c in enumerate(columns)]
    lines = [_line(columns, widths), _line(["-" * w for w in widths], widths)]
    for row in cells:
        for k in range(max(len(part) for part in row)):
            lines.append(_line([part[k] if k < len(part) else "" for part in row], widths))
    return "\n".join(lines)


def _cell(table: Table, row: int, column: str) -> str:
    text = table.cell(row, column)
    if (row, column) not in table.bold:
        return text
    first, *rest = text.split("\n")
    return "\n".join([first + BEST, *rest])


def _line(parts: list[str], widths: list[int]) -> str:
    return GAP.join(part.ljust(width) for part, width in zip(parts, widths, strict=True)).rstrip()
