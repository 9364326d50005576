"""JSON lines files (``.jsonl``, ``.ndjson``, also gzipped) as tables, for ``applied_aitk.table_files``:
one ``{column: value}`` object a line, the record `aitk serve` takes for a table row.

Batch inference reads them in blocks of whole lines, each line checked on its own (``json_batches``);
training and evaluation read the whole file as the CSV whose columns are the objects' keys
(``json_lines_as_csv``)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from applied_aitk.errors import InputError
from applied_aitk.io import name_of, read_lines
from applied_aitk.table_csv import Lines, line_blocks, line_problem
from applied_aitk.table_files import Batch, _require

JSON_LINES = (".jsonl", ".ndjson")


def json_batches(path: Path, wanted: list[str]) -> Iterator[Batch]:
    """``json_blocks`` of a JSON lines file."""
    return json_blocks(line_blocks(path), wanted)


def json_blocks(blocks: Iterable[Lines], wanted: list[str]) -> Iterator[Batch]:
    """Blocks of lines as batches of the ``wanted`` fields as text cells (a JSON number as its text, null as a null
    cell); a line that is not UTF-8, not JSON, not an object, lacks a field or holds a list, an
    object or true/false where a cell belongs is an error for that line alone. A file whose first
    object has none of the wanted fields is the wrong file: InputError, as for a CSV header
    without the columns."""
    import orjson
    import pyarrow as pa

    checked = False
    for block in blocks:
        cells: dict[str, list[str | None]] = {c: [] for c in wanted}
        kept: list[int] = []
        errors: dict[int, str] = {}
        for number, line in enumerate(block.split(), block.first):
            reason = line_problem(line, quotes=False)
            if reason == "blank":
                continue
            try:
                value = orjson.loads(line) if reason is None else None
            except orjson.JSONDecodeError as e:
                reason = f"not valid JSON ({e.msg} at character {e.pos})"
            if reason is None and not isinstance(value, dict):
                reason = "expected a JSON object of column: value"
            if reason is None and not checked:
                if not any(c in value for c in wanted):
                    _require(list(value), wanted)
                checked = True
            row = _cells(value, wanted) if reason is None else reason
            if isinstance(row, str):
                errors[number] = row
                continue
            kept.append(number)
            for column, cell in zip(wanted, row):
                cells[column].append(cell)
        yield Batch(np.array(kept, dtype=np.int64), {c: pa.array(v, pa.string()) for c, v in cells.items()}, errors)


def _cells(value: dict[str, Any], wanted: list[str]) -> list[str | None] | str:
    """The ``wanted`` cells of one JSON object as text (None for null), or why the line is bad."""
    row: list[str | None] = []
    for column in wanted:
        if column not in value:
            return f"field {column!r}: missing"
        cell = value[column]
        if isinstance(cell, (bool, dict, list)):
            kind = {bool: "true/false", dict: "an object", list: "a list"}[type(cell)]
            return f"field {column!r}: expected a number or text, got {kind}"
        row.append(cell_text(cell))
    return row


def json_lines_as_csv(path: Path) -> tuple[str, list[int]]:
    """The objects of a JSON lines file as CSV text (a column per key in order of first
    appearance, cells as ``cell_text``, empty where a key is absent) and the line number of each
    object. InputError names the line that is not UTF-8, not JSON or not an object."""
    import orjson

    values: list[dict[str, Any]] = []
    numbers: list[int] = []
    columns: dict[str, None] = {}
    for line in read_lines(path):
        if line.error is not None:
            raise InputError(f"{name_of(path)}: {line.error}")
        try:
            value = orjson.loads(line.text)
        except orjson.JSONDecodeError as e:
            raise InputError(f"{name_of(path)}: line {line.number}: not valid JSON ({e.msg} at character {e.pos})") from None
        if not isinstance(value, dict):
            raise InputError(f"{name_of(path)}: line {line.number}: expected a JSON object of column: value")
        values.append(value)
        numbers.append(line.number)
        columns.update(dict.fromkeys(value))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([cell_text(value.get(column)) for column in columns] for value in values)
    return out.getvalue(), numbers


def cell_text(cell: Any) -> str | None:
    """A JSON value as a table cell's text: a number as a CSV holds it (``2.0`` -> ``2``), null as
    None, text as it is, true/false, a list or an object as its JSON text."""
    if cell is None or isinstance(cell, str):
        return cell
    if isinstance(cell, int) and not isinstance(cell, bool):
        return str(cell)
    if isinstance(cell, float):
        return str(int(cell)) if cell.is_integer() else repr(cell)
    import orjson

    return orjson.dumps(cell).decode()
