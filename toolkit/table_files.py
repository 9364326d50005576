"""Table files as Arrow batches of text cells, for ``applied_aitk.tables``: CSV (also gzipped; UTF-8
with or without a byte-order mark, or UTF-16 with one; read by ``applied_aitk.table_csv``), JSON
lines (``.jsonl``, ``.ndjson``: one ``{column: value}`` object a line, the records `aitk serve`
takes; ``applied_aitk.table_json``) and Parquet; and whole tables as pandas frames to train on.

CSV is read in blocks of whole lines. A first line ``sep=X`` (the hint Excel writes and reads)
sets the delimiter to X and the header is the line after it. Otherwise the dialect is found
from the header: the delimiter
(comma, semicolon, tab or pipe) that splits it into fields holding every wanted column, and,
where that is not a comma, a decimal comma when the first lines hold more numbers written
``1,5`` than ``1.5`` (spreadsheets in much of Europe export ``;`` with ``1,5``). A blank line
is skipped; a line that is not UTF-8, holds an odd number of quotes or has the wrong number of
fields is an error for that line alone."""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from applied_aitk.errors import InputError
from applied_aitk.io import base_suffix

DELIMITERS = (",", ";", "\t", "|")
FLOAT32_MAX = float(np.finfo(np.float32).max)
SEP_HINT = re.compile(r'^"?sep=([^"\r\n])"?\s*$', re.IGNORECASE)
COMMA_NUMBER = re.compile(rb'^"?[-+]?\d+,\d+(?:[eE][-+]?\d+)?"?$')
LEADING_BLANK = re.compile(r"(?:[ \t\r\f\v]*\n)*")
BLANK_LINE = re.compile(r"^[ \t\r\f\v]*$", re.MULTILINE)
DOTTED = r"[-+]?\d*\.\d+(?:[eE][-+]?\d+)?"
DOT_NUMBER = re.compile(rb'^"?[-+]?\d*\.\d+(?:[eE][-+]?\d+)?"?$')


@dataclass
class Batch:
    """Rows Arrow parsed (``lines``: their line numbers, ``columns``: Arrow arrays), lines it
    could not (``errors``: reason by line number), and the file's decimal mark."""

    lines: np.ndarray
    columns: dict[str, Any]
    errors: dict[int, str]
    decimal: str = "."


def table_batches(path: Path, wanted: list[str], numeric: Iterable[str] = ()) -> Iterator[Batch]:
    """Batches of the ``wanted`` columns of a CSV (``-``: stdin) or Parquet file; the ``numeric``
    ones of a CSV block where each such cell is a number come as float64 columns (others as text).

    InputError (the file as a whole cannot be read: a missing column, a header that is not
    text, a broken gzip or Parquet file) names what is wrong, without the file's name."""
    suffix = base_suffix(path)
    if suffix == ".parquet":
        return _parquet_batches(path, wanted)
    from applied_aitk.table_csv import csv_batches
    from applied_aitk.table_json import JSON_LINES, json_batches

    return json_batches(path, wanted) if suffix in JSON_LINES else csv_batches(path, wanted, numeric)


def _parquet_batches(path: Path, wanted: list[str]) -> Iterator[Batch]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
        _require(table.schema_arrow.names, wanted)
        for column in wanted:
            kind = table.schema_arrow.field(column).type
            if not _cell_type(kind.value_type if pa.types.is_dictionary(kind) else kind):
                raise InputError(f"column {column!r}: a {kind} column, expected numbers or text")
        start = 1
        for batch in table.iter_batches(batch_size=65536, columns=wanted):
            lines = np.arange(start, start + batch.num_rows)
            start += batch.num_rows
            yield Batch(lines, {c: batch.column(c) for c in batch.schema.names}, {})
    except (OSError, pa.ArrowException) as e:  # not a Parquet file, a broken one
        raise InputError(f"cannot read the table ({e})") from None


def _cell_type(kind: Any) -> bool:
    """Whether a Parquet column of this Arrow type holds numbers or text (a list, a struct, a date: no)."""
    import pyarrow as pa

    return any(test(kind) for test in (pa.types.is_integer, pa.types.is_floating, pa.types.is_boolean, pa.types.is_decimal,
                                       pa.types.is_string, pa.types.is_large_string, pa.types.is_null))


def _require(header: list[str], wanted: list[str]) -> None:
    """InputError when a ``wanted`` column is missing from ``header`` or named twice in it."""
    missing = [c for c in wanted if c not in header]
    if missing:
        shown = ", ".join(header[:12]) + ("..." if len(header) > 12 else "")
        named = ", ".join(map(repr, missing[:5])) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise InputError(f"missing column{'s' if len(missing) > 1 else ''} {named} (columns: {shown})")
    _unique(header, wanted)


def _unique(header: list[str], columns: list[str] | None = None) -> None:
    """InputError naming the first of ``columns`` (all: None) that ``header`` names twice: which of
    the two would be read is a guess (Arrow takes the first, pandas renames the second ``X.1``)."""
    for column in header if columns is None else columns:
        places = [i + 1 for i, name in enumerate(header) if name == column]
        if len(places) > 1:
            raise InputError(f"column {column!r} is named {len(places)} times in the header (fields {', '.join(map(str, places))}); rename all but one")


def excel_separator(line: bytes | str) -> str | None:
    """The delimiter X of Excel's first-line hint ``sep=X``; None when ``line`` is no such hint."""
    text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
    found = SEP_HINT.match(text.lstrip("\ufeff"))
    return found.group(1) if found else None


def read_frame(path: Path, text_cells: bool = False) -> Any:
    """A whole CSV file (also gzipped; ``-``: stdin) as a pandas DataFrame, to train or evaluate
    on, in the dialect found as for batches: the delimiter that splits the first lines into the
    same number of fields (most fields wins), and the decimal mark. ``text_cells``: every cell
    as text (numbers written ``1,5`` turned into ``1.5``). A first line ``sep=X`` sets the
    delimiter. JSON lines (an object a line) are read as the CSV whose columns are their keys.
    The index holds each row's line number as an editor shows it (the header is line 1, or 2
    after ``sep=X``; blank lines and the lines inside quoted fields counted), for messages made
    with ``where``. InputError names the file and what is wrong."""
    import io

    import pandas as pd

    from applied_aitk.io import name_of, open_text
    from applied_aitk.table_json import JSON_LINES, json_lines_as_csv

    try:
        numbers = None
        if base_suffix(path) in JSON_LINES:
            (text, numbers), skip, rows_skipped, delimiter, decimal = json_lines_as_csv(path), 0, 0, ",", "."
        else:
            with open_text(path) as f:
                text = f.read()
            lead = LEADING_BLANK.match(text).end()  # blank lines before a sep= hint or the header
            hinted = excel_separator(text[lead : lead + 64].split("\n", 1)[0])
            skip = int(hinted is not None)
            rows_skipped = text.count("\n", 0, lead) + 1 if hinted else 0
            sample = text[: 1 << 16].splitlines()[rows_skipped:200]
            lines = [line.encode("utf-8", "surrogatepass") for line in sample if line.strip()]
            delimiter = hinted or _most_fields(lines)
            decimal = _decimal(lines[1:], delimiter)
        if not text.strip():  # pandas: "No columns to parse from file"
            raise InputError(f"{name_of(path)}: no rows (the file is empty)")
        if text_cells:
            frame = pd.read_csv(io.StringIO(text), sep=delimiter, dtype=str, keep_default_na=False, skiprows=rows_skipped)
        else:
            frame = pd.read_csv(io.StringIO(text), sep=delimiter, decimal=decimal, skiprows=rows_skipped)
    except (ValueError, OSError, pd.errors.ParserError) as e:
        raise InputError(f"{name_of(path)}: cannot read the table ({str(e).strip()})") from None
    if numbers is None:
        _check_fields(text, skip, delimiter, path)
    if numbers is None or len(numbers) != len(frame):
        numbers = _record_lines(text, skip, delimiter, len(frame))
    frame.index = pd.Index(numbers, name="line")
    if decimal == ",":
        _refuse_dotted(frame, path)
    if decimal == "," and text_cells:
        frame = frame.apply(lambda column: column.str.replace(r"^([-+]?\d+),(\d+(?:[eE][-+]?\d+)?)$", r"\1.\2", regex=True))
    return frame


def _check_fields(text: str, skip: int, delimiter: str, path: Path) -> None:
    """InputError naming the line of the first record whose number of fields is not the header's
    (pandas fills a short row with empty cells, and takes a first extra field on every row as
    the index), or a column the header names twice. Blank lines and ``skip`` hint lines are passed."""
    import io

    from applied_aitk.io import name_of

    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header, start = None, 1
    for record in reader:
        line, start = start, reader.line_num + 1
        if not record or (len(record) == 1 and not record[0].strip()):
            continue
        if skip:
            skip -= 1
            continue
        if header is None:
            header = record
            try:
                _unique(header)
            except InputError as e:
                raise InputError(f"{name_of(path)}:{line}: {e}") from None
        elif len(record) != len(header):
            raise InputError(f"{name_of(path)}:{line}: expected {len(header)} fields, got {len(record)}")


def _refuse_dotted(frame: Any, path: Path) -> None:
    """InputError at the first text cell of a decimal-comma table written as a number with a '.'
    (``1.335``: a thousands mark to its author), which would be read as 1.335."""
    from applied_aitk.errors import shown

    for column in frame.columns:
        if frame[column].dtype.kind in "biufc":
            continue
        dotted = frame[column].astype(str).str.strip().str.fullmatch(DOTTED)
        if dotted.any():
            row = int(dotted.to_numpy().argmax())
            value = frame[column].iloc[row]
            raise InputError(f"{where(frame, row, path)}: column {column!r}: {shown(value)} has a '.' in a file with decimal commas (a thousands mark?)")


def where(frame: Any, row: int, path: Path | str) -> str:
    """``PATH:LINE`` of the row at position ``row`` of a frame (or column) from ``read_frame`` (``path``: the
    file it was read from), or of a concatenation of such frames keyed by their paths
    (``pd.concat(frames, keys=paths)``), as batch error rows name a line."""
    from applied_aitk.io import name_of

    key = frame.index[row]
    if isinstance(key, tuple):
        path, key = key
    return f"{name_of(path)}:{key}"


def _record_lines(text: str, skip: int, delimiter: str, rows: int) -> np.ndarray:
    """The line number (from 1) on which each of the ``rows`` data records of a CSV text
    starts, past ``skip`` hint lines and the header, as pandas reads it (blank lines skipped)."""
    import io

    total = text.count("\n") + (not text.endswith("\n"))
    blank, line, at = [], 1, 0
    for found in BLANK_LINE.finditer(text):
        line += text.count("\n", at, found.start())
        at = found.start()
        blank.append(line)
    numbers = np.setdiff1d(np.arange(1, total + 1), blank)[skip + 1:]
    if len(numbers) == rows:
        return numbers
    starts, end = [], 0  # a quoted field spans lines: let the csv module find where records start
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    for record in reader:
        if record and not (len(record) == 1 and not record[0].strip()):
            starts.append(end + 1)
        end = reader.line_num
    starts = starts[skip + 1:]
    if len(starts) == rows:
        return np.array(starts, dtype=np.int64)
    return np.arange(skip + 2, skip + 2 + rows)


def _most_fields(lines: list[bytes]) -> str:
    """The delimiter that splits every one of ``lines`` into the same number of fields, most fields winning."""
    complete = lines[:-1] if len(lines) > 1 else lines  # the sample may cut the last line short
    best, most = ",", 0
    for delimiter in DELIMITERS:
        counts = {line.count(delimiter.encode()) for line in complete}
        if len(counts) == 1 and (count := counts.pop()) > most:
            best, most = delimiter, count
    return best


def _decimal(lines: list[bytes], delimiter: str) -> str:
    """``,`` when the delimiter is not a comma and the fields hold more ``1,5`` than ``1.5``."""
    if delimiter == ",":
        return "."
    fields = [f.strip() for line in lines for f in line.split(delimiter.encode())]
    commas = sum(bool(COMMA_NUMBER.match(f)) for f in fields)
    dots = sum(bool(DOT_NUMBER.match(f)) for f in fields)
    return "," if commas > dots else "."
