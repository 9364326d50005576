"""JSON lines files (``.jsonl``, ``.ndjson``, also gzipped) as tables, for ``applied_aitk.table_files``:
one ``{column: value}`` object a line, the record `aitk serve` takes for a table row.

Batch inference reads them in blocks of whole lines (``json_batches``), a block of plain rows in
one call, any other block line by line, each line checked on its own; training and evaluation read the whole file as the CSV whose columns are the objects' keys
(``json_lines_as_csv``)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np

from applied_aitk.errors import InputError
from applied_aitk.io import name_of, read_lines
from applied_aitk.table_csv import Lines, line_blocks, line_problem
from applied_aitk.table_files import Batch, _require
from applied_aitk.tables import FLOAT32_MAX, float_text

JSON_LINES = (".jsonl", ".ndjson")


def json_batches(path: Path, wanted: list[str]) -> Iterator[Batch]:
    """``json_blocks`` of a JSON lines file."""
    return json_blocks(line_blocks(path), wanted)


def json_blocks(blocks: Iterable[Lines], wanted: list[str]) -> Iterator[Batch]:
    """Blocks of lines as batches of the ``wanted`` fields (a JSON number as its text, null as a null
    cell); a line that is not UTF-8, not JSON, not an object, lacks a field or holds a list, an
    object or true/false where a cell belongs is an error for that line alone. A file whose first
    object has none of the wanted fields is the wrong file: InputError, as for a CSV header
    without the columns.

    A block whose every line is an object holding every wanted field as a number, text or null is
    parsed in one call and taken a column at a time (``_at_once``); other blocks line by line."""
    checked = False
    for block in blocks:
        batch = _at_once(block, wanted, checked)
        if batch is None:
            batch, checked = _by_line(block, wanted, checked)
        else:
            checked = True
        yield batch


def _check_first(value: dict[str, Any], wanted: list[str]) -> None:
    """The file's first object: InputError when it has none of the wanted fields (the wrong file)."""
    if not any(c in value for c in wanted):
        _require(list(value), wanted)


def _at_once(block: Lines, wanted: list[str], checked: bool) -> Batch | None:
    """The block parsed as one JSON array (its newlines made commas), its columns taken whole:
    numbers and nulls as a float64 column, text as a text column; None (read it line by line) when
    a line is blank, is not JSON or not an object, or a cell is missing, true/false, a list or an object."""
    import orjson
    import pyarrow as pa

    try:
        values = orjson.loads(b"[" + block.data.replace(b"\n", b",") + b"]")
    except orjson.JSONDecodeError:
        return None
    if len(values) != block.count or set(map(type, values)) != {dict}:
        return None
    if not checked:
        _check_first(values[0], wanted)
    try:  # the wanted cells of every object, a column at a time, in C loops
        cut = itemgetter(*wanted)
        table = [list(map(cut, values))] if len(wanted) == 1 else list(zip(*map(cut, values)))
    except KeyError:  # a missing field
        return None
    columns = {}
    for column, cells in zip(wanted, table):
        kinds = set(map(type, cells))
        if kinds <= _TEXT:
            columns[column] = pa.array(cells, pa.string())
        elif kinds <= _CELLS:
            numbers = _number_column(cells, int in kinds) if kinds <= _NUMBER else None
            if numbers is None and _beyond_float32(cells):  # orjson made it a float: the line path quotes it as written
                return None
            columns[column] = numbers or pa.array(list(map(cell_text, cells)), pa.string())
        else:
            return None
    return Batch(np.arange(block.first, block.first + block.count), columns, {})


_TEXT = {str, type(None)}
_NUMBER = {int, float, type(None)}
_CELLS = _TEXT | _NUMBER


def _number_column(cells: list[int | float | None], ints: bool) -> Any:
    """``cells`` as float64 when that keeps what their text would say: finite, within float32's range
    and, with integers among them, below 2**53 (exact as floats); else None (then they are text)."""
    import pyarrow as pa

    try:
        column = pa.array(cells, pa.float64())
    except (pa.ArrowException, OverflowError):  # an integer beyond 64 bits
        return None
    values = column.fill_null(0.0).to_numpy()
    return column if (np.abs(values) <= (2.0**53 if ints else FLOAT32_MAX)).all() else None


def _by_line(block: Lines, wanted: list[str], checked: bool) -> tuple[Batch, bool]:
    """The block line by line, each line's problem an error for it alone; and whether the file's
    first object has been checked now."""
    import orjson
    import pyarrow as pa

    cells: dict[str, list[str | None]] = {c: [] for c in wanted}
    kept: list[int] = []
    errors: dict[int, str] = {}
    for number, line in enumerate(block.split(), block.first):
        reason = line_problem(line, quotes=False)
        if reason == "blank":
            continue
        try:
            value = orjson.loads(line) if reason is None else None
            if isinstance(value, dict) and _beyond_float32([value.get(c) for c in wanted]):
                value = _as_written(line) or value
        except orjson.JSONDecodeError as e:
            value = _as_written(line)
            if value is None:
                reason = f"not valid JSON ({e.msg} at character {e.pos})"
        if reason is None and not isinstance(value, dict):
            reason = "expected a JSON object of column: value"
        if reason is None and not checked:
            _check_first(value, wanted)
            checked = True
        row = _cells(value, wanted) if reason is None else reason
        if isinstance(row, str):
            errors[number] = row
            continue
        kept.append(number)
        for column, cell in zip(wanted, row):
            cells[column].append(cell)
    return Batch(np.array(kept, dtype=np.int64), {c: pa.array(v, pa.string()) for c, v in cells.items()}, errors), checked


def _beyond_float32(cells: list[Any]) -> bool:
    """Whether a number among ``cells`` is beyond float32's range (orjson reads an integer
    beyond 64 bits as a float, and fails on one beyond float64)."""
    return any(type(c) in (int, float) and not abs(c) <= FLOAT32_MAX for c in cells)


def _as_written(line: bytes) -> Any:
    """The JSON of ``line`` with integers exact and a float beyond float32's range kept as its
    text as written, for messages to quote it; None when it is not JSON."""
    import json

    def number(text: str) -> float | str:
        return float(text) if abs(float(text)) <= FLOAT32_MAX else text

    try:
        return json.loads(line, parse_float=number, parse_constant=_no_constant)
    except ValueError:
        return None


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


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
            raise InputError(line.message(name_of(path)))
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
    None, text as it is (``float_text``), true/false, a list or an object as its JSON text."""
    if cell is None or isinstance(cell, str):
        return cell
    if isinstance(cell, int) and not isinstance(cell, bool):
        return str(cell)
    if isinstance(cell, float):
        return float_text(cell)
    import orjson

    return orjson.dumps(cell).decode()
