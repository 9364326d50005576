"""The one reader of tabular inputs (CSV, also gzipped, and Parquet) for batch inference; the
files themselves (dialects, encodings, bad lines) are read by ``applied_aitk.table_files``.

Tables stream in Arrow record batches and are decoded a batch at a time: the named number
columns become one float32 array, the text columns stay text. Every bad row is isolated: a row
with too many or too few fields, an unbalanced quote, bytes that are not UTF-8, a cell that is
not a number, a number that is not finite or does not fit float32 - each is one error record
naming file, line and problem, and the rows around it are read. A file that cannot be read at
all is one error record with the file's path as its id.

Record ids are ``PATH:LINE`` with the path as given (so two ``predict.csv`` in different folders
differ) and LINE the line in the file (the header is line 1); for Parquet, ``PATH:ROW``."""

from __future__ import annotations

import functools
import math
import operator
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from applied_aitk.console import get_logger
from applied_aitk.errors import InputError, shown
from applied_aitk.io import name_of
from applied_aitk.table_files import FLOAT32_MAX, Batch, table_batches
from applied_aitk.usecase import Record, RecordBatch

logger = get_logger(__name__)

MISSING = frozenset({"", "na", "nan", "null", "none", "n/a"})
NUMBER = re.compile(r"\s*[-+]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|inf|infinity|nan)\s*", re.ASCII | re.IGNORECASE)
"""The number syntax a cell may use: ASCII digits, sign, '.', exponent, inf/nan words (not
``1_000`` or non-ASCII digits, which Python's float() would take)."""


@dataclass(frozen=True)
class Schema:
    """The columns a predictor needs: ``numbers`` (read as float32) and ``texts`` (kept as text).

    ``missing``: the cell texts (lower case, trimmed) that mean "no value" in a number column,
    read as NaN for the model to impute; empty (the default): a missing number is an error."""

    numbers: tuple[str, ...]
    texts: tuple[str, ...] = ()
    missing: frozenset[str] = frozenset()


def read_records(paths: Iterable[Path], schema: Schema) -> Iterator[Record]:
    """One Record per table row of each file in turn (``-`` is CSV on stdin), the records of
    ``read_batches`` one by one (the per-record path: `aitk serve`, ``--engine ray``).

    A record's data is ``(numbers, texts)``: float32 [len(schema.numbers)] (NaN only for an
    allowed missing cell) and a tuple of the ``schema.texts`` cells (None where empty)."""
    for batch in read_batches(paths, schema):
        yield from _records(batch)


def read_batches(paths: Iterable[Path], schema: Schema) -> Iterator[RecordBatch]:
    """The rows of each file in turn as RecordBatches, one per block Arrow parsed (``-`` is CSV on
    stdin). ``data`` holds "numbers", float32 [rows, len(schema.numbers)] (NaN only for an allowed
    missing cell), and "texts", object [rows, len(schema.texts)] (str, None where empty); a bad
    line or cell is in ``errors``, a file that cannot be read is one batch of one error record.
    The batches are ``unique`` when no two paths have the same name (``_distinct``)."""
    paths = list(paths)
    unique = _distinct([name_of(path) for path in paths])
    for path in paths:
        yield from _file_batches(path, schema, unique)


def _distinct(names: list[str]) -> bool:
    """Whether the ids of files with these names (``NAME:LINE``, or ``NAME`` for a file that cannot be
    read) are all different: no name twice, and none is another's ``NAME:DIGITS``."""
    given = set(names)
    return len(given) == len(names) and not any(
        (cut := name.rpartition(":"))[0] in given and cut[2].isdigit() and cut[2].isascii() for name in names)


def _file_batches(path: Path, schema: Schema, unique: bool = False) -> Iterator[RecordBatch]:
    """The rows of one file, a batch at a time (``unique``: flagged so); one error record if it cannot be read."""
    name = name_of(path)
    count = 0
    try:
        numeric = [c for c in schema.numbers if c not in schema.texts]  # a text column keeps its cells as written
        for batch in table_batches(path, [*dict.fromkeys([*schema.numbers, *schema.texts])], numeric):
            read = _record_batch(name, batch, schema)
            read.unique = unique
            count += len(read.ids)
            yield read
    except InputError as e:
        message = str(e) if str(e).startswith(name) else f"{name}: {e}"
        logger.warning(f"{message}; an error row for the file, the other inputs go on")
        yield RecordBatch([name], table_data(np.zeros((0, len(schema.numbers)), np.float32), width=len(schema.texts)), {0: message}, unique)
        return
    if count == 0:
        logger.warning(f"{name}: no rows, nothing to predict")


def _record_batch(name: str, batch: Batch, schema: Schema) -> RecordBatch:
    """One batch in line order: the decoded rows, and an error for each bad line and cell."""
    numbers, bad_cells = decode_numbers(batch.columns, schema, batch.decimal)
    texts = np.empty((len(numbers), len(schema.texts)), dtype=object)
    for j, column in enumerate(schema.texts):
        texts[:, j] = _text_cells(batch.columns[column])
    if not batch.errors and not bad_cells:
        return RecordBatch(line_ids(name, batch.lines), table_data(numbers, texts))
    lines = batch.lines.tolist()
    reasons = {**batch.errors, **{lines[i]: reason for i, reason in bad_cells.items()}}
    good = np.ones(len(lines), dtype=bool)
    good[list(bad_cells)] = False
    every = sorted({*lines, *batch.errors})
    errors = {i: f"{name}:{line}: {reasons[line]}" for i, line in enumerate(every) if line in reasons}
    return RecordBatch(line_ids(name, np.array(every, dtype=np.int64)), table_data(numbers[good], texts[good]), errors)


def line_ids(name: str, lines: np.ndarray) -> list[str]:
    """``NAME:LINE`` for each of ``lines`` (int64 [rows]): the text made by Arrow, which leaves the
    interpreter lock to the predicting thread meanwhile, then taken as Python strings (a quarter of
    the lock time of formatting each in Python); formatted in Python for a name that is not valid
    Unicode (a file name's undecodable bytes)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        prefix = pa.scalar(f"{name}:", pa.string())
    except (pa.ArrowException, UnicodeEncodeError):
        return [f"{name}:{line}" for line in lines.tolist()]
    return pc.binary_join_element_wise(prefix, pc.cast(pa.array(lines, pa.int64()), pa.string()), "").to_pylist()


def _records(batch: RecordBatch) -> list[Record]:
    """The records of one batch, error records in their place."""
    rows = zip(batch.data["numbers"], map(tuple, batch.data["texts"].tolist()))
    if not batch.errors:
        return list(map(Record, batch.ids, rows))
    return [Record(id, error=batch.errors[i]) if i in batch.errors else Record(id, next(rows)) for i, id in enumerate(batch.ids)]


def table_data(numbers: np.ndarray, texts: np.ndarray | None = None, width: int = 0) -> dict[str, np.ndarray]:
    """A TablePredictor's input: {"numbers": float32 [rows, N], "texts": object [rows, T]}
    (``texts`` None: ``width`` columns of None)."""
    if texts is None:
        texts = np.full((len(numbers), width), None, dtype=object)
    return {"numbers": numbers, "texts": texts}


def stacked(inputs: list[tuple[np.ndarray, tuple]], schema: Schema) -> dict[str, np.ndarray]:
    """``table_data`` of records' data ``(numbers, texts)`` (``read_records``, ``record_from_object``)."""
    numbers = np.array([numbers for numbers, _ in inputs], dtype=np.float32).reshape(len(inputs), len(schema.numbers))
    texts = np.empty((len(inputs), len(schema.texts)), dtype=object)
    for i, (_, cells) in enumerate(inputs):
        texts[i] = cells
    return table_data(numbers, texts)


def record_from_object(value: Any, schema: Schema, id: str) -> Record:
    """The record of one table row sent as a JSON object ``{column: value}`` (`aitk serve`), checked
    and decoded by the functions that read a line of a JSON lines file in batch `predict`
    (``table_json``), so that a bad record gets the error text batch `predict` writes for that
    line. InputError names the field that is missing or wrong."""
    (record,) = records_from_objects([value], schema, [id])
    if record.error is not None:
        raise InputError(record.error)
    return record


def records_from_objects(values: list[Any], schema: Schema, ids: list[str]) -> list[Record]:
    """``record_from_object`` of each value, a bad one an error record with its InputError's text;
    the rows whose number cells are all JSON numbers (the common case) decoded in one numpy call
    for all of them, the others (text to parse, something to say) as batch `predict` reads a line."""
    take = _cells_of(schema.numbers)
    records: list[Record | None] = [None] * len(values)
    plain: list[tuple[int, tuple]] = []  # (position, text cells) of the rows of plain numbers
    cells: list[tuple] = []
    for k, value in enumerate(values):
        texts = _plain_texts(value, schema.texts) if isinstance(value, dict) else None
        numbers = _number_cells(value, take) if texts is not None else None
        if numbers is None:
            records[k] = _read_as_a_line(value, schema, ids[k])
        else:
            plain.append((k, texts))
            cells.append(numbers)
    if cells:
        try:
            numbers = np.array(cells, dtype=np.float64).reshape(len(cells), len(schema.numbers))
        except OverflowError:  # an integer beyond float64: each row on its own
            numbers = np.full((len(cells), len(schema.numbers)), np.inf)
        fits = (np.abs(numbers) <= FLOAT32_MAX).all(axis=1)  # False for NaN, an infinity, beyond float32
        with np.errstate(over="ignore", invalid="ignore"):  # the rows that do not fit are read again below
            numbers = numbers.astype(np.float32)  # integers through float64, as a text cell is read
        for j, ((k, texts), fit) in enumerate(zip(plain, fits.tolist())):
            records[k] = Record(ids[k], (numbers[j], texts)) if fit else _read_as_a_line(values[k], schema, ids[k])
    return records  # type: ignore[return-value]


def _number_cells(value: dict[str, Any], take: Callable[[dict[str, Any]], tuple]) -> tuple | None:
    """The number cells of a row if every one is a JSON number (int or float, not bool); else None."""
    try:
        numbers = take(value)
    except KeyError:
        return None
    return numbers if set(map(type, numbers)) <= {int, float} else None


def _read_as_a_line(value: Any, schema: Schema, id: str) -> Record:
    """The record of a row as batch `predict` reads a JSON line (``_checked``), or its error record."""
    if not isinstance(value, dict):
        return Record(id, error=NOT_AN_OBJECT)
    try:
        return Record(id, _checked(value, schema))
    except InputError as e:
        return Record(id, error=str(e))


NOT_AN_OBJECT = "expected a JSON object of column: value"
"""The error of a JSON record that is not an object, as batch `predict` words it for a JSON line."""
_ABSENT = object()


@functools.lru_cache(maxsize=64)
def _cells_of(columns: tuple[str, ...]) -> Callable[[dict[str, Any]], tuple]:
    """A function taking the cells of ``columns`` from a row as a tuple, in one C call (KeyError if one is missing)."""
    if len(columns) == 1:
        column = columns[0]
        return lambda value: (value[column],)
    return operator.itemgetter(*columns) if columns else lambda value: ()


def _plain_texts(value: dict[str, Any], columns: tuple[str, ...]) -> tuple[str | None, ...] | None:
    """The text cells as batch `predict` reads them (None where empty); None if one is missing or
    not a number, text or null (``_checked`` says why)."""
    if not columns:
        return ()
    from applied_aitk.table_json import cell_text

    texts = []
    for column in columns:
        cell = value.get(column, _ABSENT)
        if cell is _ABSENT or isinstance(cell, (bool, dict, list)):
            return None
        texts.append(cell_text(cell) or None)
    return tuple(texts)


def _checked(value: dict[str, Any], schema: Schema) -> tuple[np.ndarray, tuple[str | None, ...]]:
    """A record's data through batch `predict`'s path for a JSON line: its cells as text (``_cells``
    names a missing field or one that is true/false, a list or an object), then decoded as a block
    of rows is. InputError with the first problem."""
    import pyarrow as pa

    from applied_aitk.table_json import _cells

    wanted = [*dict.fromkeys([*schema.numbers, *schema.texts])]
    cells = _cells(value, wanted)
    if isinstance(cells, str):
        raise InputError(cells)
    columns = {column: pa.array([cell], pa.string()) for column, cell in zip(wanted, cells)}
    numbers, bad = decode_numbers(columns, schema)
    if bad:
        raise InputError(bad[0])
    return numbers[0], tuple(_text_cells(columns[column])[0] for column in schema.texts)


def decode_numbers(columns: dict[str, Any], schema: Schema, decimal: str = ".") -> tuple[np.ndarray, dict[int, str]]:
    """(float32 [rows, len(schema.numbers)], reason by row index for rows with a bad number cell).

    A bad cell: not a number, not finite (unless a ``missing`` text), beyond float32's range.
    ``decimal`` ``,``: text cells are written ``1,5``."""
    n = len(next(iter(columns.values()))) if columns else 0
    out = np.empty((n, len(schema.numbers)), dtype=np.float32)
    bad: dict[int, str] = {}
    for j, column in enumerate(schema.numbers):
        values, reasons = _number_column(columns[column], column, schema.missing, decimal)
        out[:, j] = values
        for i, reason in reasons.items():
            bad.setdefault(i, reason)
    return out, bad


def _number_column(cells: Any, column: str, missing: frozenset[str], decimal: str = ".") -> tuple[np.ndarray, dict[int, str]]:
    """float32 values of one column (NaN for an allowed missing cell) and the reason for each bad cell."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_dictionary(cells.type):  # a Parquet column written from a pandas category
        cells = cells.dictionary_decode()
    if pa.types.is_string(cells.type) or pa.types.is_large_string(cells.type):
        texts = cells if decimal == "." else pc.replace_substring(cells, decimal, ".")
        try:
            values = pc.cast(texts, pa.float64()).to_numpy(zero_copy_only=False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # some cell is not a plain number: cell by cell
            values = np.array([_to_float(v) for v in texts.to_pylist()], dtype=np.float64)
    else:  # a typed column (Parquet, or CSV numbers: ``table_csv``): nulls become NaN
        values = (cells if pa.types.is_float64(cells.type) else cells.cast(pa.float64())).to_numpy(zero_copy_only=False)
    with np.errstate(invalid="ignore"):
        fine = np.abs(values) <= FLOAT32_MAX
    reasons = {}
    if decimal == ",":  # a '.' is a thousands mark to the file's author: never read as a decimal point
        dotted = pc.match_substring(cells, ".").to_numpy(zero_copy_only=False)
        for i in np.flatnonzero(dotted).tolist():
            reasons[i] = f"field {column!r}: {shown(cells[i].as_py())} has a '.' in a file with decimal commas (a thousands mark?)"
        fine &= ~dotted
    if fine.all():
        return values.astype(np.float32), {}
    for i in np.flatnonzero(~fine).tolist():
        if i in reasons:
            continue
        reason = _bad_cell(cells[i].as_py(), values[i], missing)
        if reason is not None:
            reasons[i] = f"field {column!r}: {reason}"
    return np.where(fine, values, np.nan).astype(np.float32), reasons


def _to_float(cell: str | float | None) -> float:
    """A cell's number: NaN when it is not ASCII number syntax (``NUMBER``), inf for an integer beyond float64."""
    if isinstance(cell, str):
        return float(cell) if NUMBER.fullmatch(cell) else float("nan")
    try:
        return float(cell)
    except (TypeError, ValueError):
        return float("nan")
    except OverflowError:  # an integer beyond float64
        return float("inf")


def _bad_cell(raw: Any, value: float, missing: frozenset[str]) -> str | None:
    """Why a cell that is not a finite float32 cannot be used; None for an allowed missing value."""
    if raw is None or (isinstance(raw, str) and raw.strip().lower() in MISSING):
        if missing and (raw is None or raw.strip().lower() in missing):
            return None
        return "missing, expected a number" if raw is None or not raw.strip() else f"{shown(raw)} is not a finite number"
    if isinstance(raw, str) and np.isnan(value) and "nan" not in raw.lower():
        return f"{shown(raw)} is not a number"
    if np.isfinite(value) or isinstance(raw, int) or (isinstance(raw, str) and "inf" not in raw.lower()):
        return f"{shown(raw, quote=False)} does not fit a float32 (largest 3.4e38)"
    return f"{shown(raw)} is not a finite number"


def float_text(value: float) -> str:
    """A float as a cell's text: a whole number below 2**53 as its digits (5411.0 -> "5411"), any
    other as Python's repr (1e+39, not the 40 digits of its binary value; -0.0 keeps its sign, as a
    CSV's ``-0.0`` does)."""
    whole = value.is_integer() and abs(value) < 2.0**53 and not (value == 0 and math.copysign(1.0, value) < 0)
    return str(int(value)) if whole else repr(value)


def _text_cells(cells: Any) -> list[str | None]:
    """Cells as text, None where empty or null (Parquet numbers as their text: 5411.0 -> "5411")."""
    import pyarrow as pa

    if pa.types.is_floating(cells.type):
        return [None if v is None or v != v else float_text(v) for v in cells.to_pylist()]
    if not (pa.types.is_string(cells.type) or pa.types.is_large_string(cells.type)):
        cells = cells.cast(pa.string())
    return [v if v else None for v in cells.to_pylist()]
