"""Reading label CSVs so that every bad row becomes a problem naming the file and line.

Functions append to a ``problems`` list instead of raising, so one pass reports everything wrong.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Row:
    """One data row: its line number in the file, its id (first wanted column) and its fields.

    ``unasked``: the file's columns beyond those the caller asked for, which a ground-truth reader
    must refuse (they are labels it does not know) while a metadata reader ignores them.
    """

    line: int
    id: str
    fields: dict[str, str]
    unasked: tuple[str, ...]


def read_rows(path: Path, columns: Sequence[str], problems: list[str]) -> list[Row]:
    """Rows of ``path``, which must have at least ``columns``; ``columns[0]`` is the unique id.

    Extra columns are kept in ``Row.unasked`` (metadata files carry many); rows with the wrong number
    of fields, an empty id or a repeated id are reported and skipped. Blank lines are skipped silently.
    """
    if not path.is_file():
        problems.append(f"{path}: file not found")
        return []
    rows: list[Row] = []
    first_line: dict[str, int] = {}
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = [name.strip() for name in next(reader, [])]
            if any(column not in header for column in columns):
                problems.append(f"{path}: wrong columns: expected {','.join(columns)}, found {','.join(header)}")
                return []
            unasked = tuple(name for name in header if name not in columns)
            for values in reader:
                if not any(value.strip() for value in values):
                    continue
                where = f"{path} line {reader.line_num}"
                if len(values) != len(header):
                    problems.append(f"{where}: expected {len(header)} fields, found {len(values)}")
                    continue
                fields = dict(zip(header, (value.strip() for value in values), strict=True))
                row_id = fields[columns[0]]
                if not row_id:
                    problems.append(f"{where}: empty {columns[0]}")
                elif row_id in first_line:
                    problems.append(f"{where}: duplicate id {row_id} (first on line {first_line[row_id]})")
                else:
                    first_line[row_id] = reader.line_num
                    rows.append(Row(reader.line_num, row_id, fields, unasked))
    except (UnicodeDecodeError, csv.Error) as error:
        problems.append(f"{path}: not a readable CSV ({error})")
    return rows


def one_hot_labels(
    path: Path, rows: Sequence[Row], class_columns: Sequence[str], problems: list[str], *, implicit_last: bool = False
) -> list[tuple[str, int]]:
    """``(id, class index)`` from one-hot ``0``/``1`` columns; bad rows are reported and skipped.

    With ``implicit_last`` an all-zero row means one extra class after the columns (ISIC 2017's
    nevus), so only rows with more than one 1 are not one-hot. A column beyond the id and
    ``class_columns`` refuses the whole file: it is a class this reader does not know, and ignoring
    it would quietly give its rows another class (or report each of them as not one-hot).
    """
    unknown = rows[0].unasked if rows else ()
    if unknown:
        problems.append(
            f"{path}: unknown label column(s) {','.join(unknown)}; "
            f"expected only the label columns {','.join(class_columns)} besides the id"
        )
        return []
    labelled = []
    for row in rows:
        raw = [row.fields[column] for column in class_columns]
        try:
            values = [float(value) for value in raw]
        except ValueError:
            problems.append(f"{path} line {row.line} ({row.id}): label values {','.join(raw)} are not all numbers")
            continue
        ones = [index for index, value in enumerate(values) if value == 1.0]
        binary = all(value in (0.0, 1.0) for value in values)
        if not binary or len(ones) > 1 or (not ones and not implicit_last):
            shown = ", ".join(f"{column}={value}" for column, value in zip(class_columns, raw, strict=True))
            problems.append(f"{path} line {row.line} ({row.id}): label row is not one-hot ({shown})")
            continue
        labelled.append((row.id, ones[0] if ones else len(class_columns)))
    return labelled


def integer_labels(
    path: Path, rows: Sequence[Row], column: str, num_classes: int, problems: list[str]
) -> list[tuple[str, int]]:
    """``(id, label)`` from an integer column that must lie in ``0..num_classes-1``."""
    labelled = []
    for row in rows:
        raw = row.fields[column]
        if raw.isascii() and raw.isdigit() and int(raw) < num_classes:
            labelled.append((row.id, int(raw)))
        else:
            problems.append(f"{path} line {row.line} ({row.id}): {column}={raw!r} is not in 0-{num_classes - 1}")
    return labelled
