"""Columnar predictions (``Predictor.predict_columns``): a batch's output as columns, with no Python
object per row. Batch predict writes them as JSON lines straight from the columns (numbers by
orjson a column per call, text a cell per call, rows joined in C: ``PredictedBatch.json_lines``);
`aitk serve`, ``--engine ray`` and the isolation of a failing batch take them as rows
(``Columns.rows``), the same rows as the JSON lines hold. Nothing non-finite reaches an output: a
row holding NaN or an infinity is written as an error row naming the field, as for rows."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

import numpy as np
import orjson

from applied_aitk.errors import AitkError
from applied_aitk.outputs import NULL, finite, json_lines
from applied_aitk.usecase import Predictor, RecordBatch


Column = Any
"""One output field, a value per row: a numpy array (1-D: a number or bool per row; 2-D: a list of
numbers per row), a list (any JSON value per row: text, None, lists, dicts), or a dict of columns
(an object per row, its fields in the dict's order)."""


@dataclass
class Columns:
    """The output of ``Predictor.predict_columns`` for n rows: ``values``, {field: Column}, every
    column n long, the fields in the order rows hold them; ``extra``, {row position: {field: value}},
    the fields only some rows have (``warnings``), added after the columns' fields. An ``error``
    in ``extra`` makes that row an error row (its other fields left out), as an ``error`` key does
    in ``predict``'s rows."""

    values: dict[str, Column]
    extra: dict[int, dict[str, Any]] = field(default_factory=dict)

    def __len__(self) -> int:
        return _length(self.values)

    def rows(self) -> list[dict[str, Any]]:
        """One dict per row, as ``predict`` returns them (numpy numbers become Python's)."""
        names = list(self.values)
        rows = [dict(zip(names, cells)) for cells in zip(*(_cells(self.values[n]) for n in names))] if names else []
        for i, more in self.extra.items():
            rows[i] = {"error": more["error"]} if more.get("error") is not None else {**rows[i], **more}
        return rows

    def row(self, i: int) -> dict[str, Any]:
        """Row ``i`` of ``rows()``, made alone."""
        more = self.extra.get(i, {})
        if more.get("error") is not None:
            return {"error": more["error"]}
        return {**{name: _cell(column, i) for name, column in self.values.items()}, **more}


@dataclass
class PredictedBatch:
    """The output of one RecordBatch on the columnar path: every record's id (in order), the read
    errors ({position in ids: message}) and the model's Columns for the other records, in order.
    What the predicting thread hands to the journal's writer, which writes it as JSON lines."""

    ids: list[str]
    columns: Columns
    errors: dict[int, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    def rows(self) -> list[dict[str, Any]]:
        """The rows ``batch_rows`` gives for the batch: ``{"id": ..., **row}`` each, error rows in place."""
        made = iter(self.columns.rows())
        return [{"id": id, "error": self.errors[i]} if i in self.errors else {"id": id, **next(made)}
                for i, id in enumerate(self.ids)]

    def json_lines(self) -> tuple[bytes, int]:
        """(the rows as UTF-8 JSON lines, how many of them are error rows), the lines ``json_lines``
        writes for ``rows()``; made from the columns, a row only for an error, an ``extra`` field or
        a non-finite value."""
        good = [id for i, id in enumerate(self.ids) if i not in self.errors] if self.errors else self.ids
        lines, special = _lines(self.columns, good)
        failed = 0
        for k in sorted(special):
            text, (row,) = json_lines([{"id": good[k], **self.columns.row(k)}])
            lines[k] = text[:-1]
            failed += row.get("error") is not None
        if self.errors:
            made = iter(lines)
            lines = [orjson.dumps({"id": id, "error": self.errors[i]}) if i in self.errors else next(made)
                     for i, id in enumerate(self.ids)]
            failed += len(self.errors)
        return (b"\n".join(lines) + b"\n" if lines else b""), failed


def batch_output(predictor: Predictor, batch: RecordBatch) -> list[dict[str, Any]] | PredictedBatch:
    """``batch_rows``, or for a predictor with ``predict_columns`` its columns with the batch's ids
    and read errors (``PredictedBatch``, which the journal writes as JSON lines without making rows).
    If ``predict_columns`` raises or gives the wrong number of rows, ``batch_rows`` isolates the bad row."""
    from applied_aitk.batch import batch_rows  # batch imports this module

    count = len(batch.ids) - len(batch.errors)
    if not count or type(predictor).predict_columns is Predictor.predict_columns:
        return batch_rows(predictor, batch)
    try:
        columns = predictor.predict_columns(batch.data)
        if len(columns) != count:
            raise AitkError(f"predictor returned {len(columns)} rows for {count} inputs")
    except Exception:
        return batch_rows(predictor, batch)
    return PredictedBatch(batch.ids, columns, batch.errors)


def _lines(columns: Columns, ids: list[str]) -> tuple[list[bytes], set[int]]:
    """(one JSON object per row of ``columns``, with its id first; the rows to make as rows instead:
    those with ``extra`` fields or a non-finite number, or all when a cell is something orjson refuses)."""
    n = len(ids)
    special = set(columns.extra)
    pieces: list[Any] = [b'{"id":', list(map(orjson.dumps, ids))]
    try:
        for name, column in columns.values.items():
            pieces.append(b"," + orjson.dumps(name) + b":")
            _encode(column, pieces, special)
    except (orjson.JSONEncodeError, TypeError):  # numpy scalars in a list, integers beyond 64 bits: as rows
        return [b""] * n, set(range(n))
    pieces.append(b"}")
    merged = _merged(pieces, n)
    return list(map(b"".join, zip(*merged))), special


def _encode(column: Column, pieces: list[Any], special: set[int]) -> None:
    """Append ``column``'s JSON texts (a list, one per row) or constant bytes to ``pieces``; add the
    positions of rows holding NaN or an infinity to ``special``."""
    if isinstance(column, dict):
        pieces.append(b"{")
        for i, (name, inner) in enumerate(column.items()):
            pieces.append((b"," if i else b"") + orjson.dumps(name) + b":")
            _encode(inner, pieces, special)
        pieces.append(b"}")
    elif isinstance(column, np.ndarray) and column.dtype.kind in "fiub":
        pieces.append(_numbers(column, special))
    else:
        cells = column.tolist() if isinstance(column, np.ndarray) else column
        texts = list(map(orjson.dumps, cells))
        if NULL.search(b"".join(texts)):  # orjson writes NaN and inf as null: look closer
            special.update(i for i, cell in enumerate(cells) if not finite(cell))
        pieces.append(texts)


def _numbers(column: np.ndarray, special: set[int]) -> list[bytes]:
    """The JSON text of each row of a 1-D or 2-D numeric array, all of it by one orjson call (floats
    as float64, as ``tolist`` gives them to rows; integers of any width as they are)."""
    if column.dtype.kind == "f":
        column = column.astype(np.float64, copy=False)
        finite = np.isfinite(column)
        if not finite.all():
            special.update(np.flatnonzero(~finite.reshape(len(column), -1).all(axis=1)).tolist())
    if not len(column):
        return []
    text = orjson.dumps(np.ascontiguousarray(column), option=orjson.OPT_SERIALIZE_NUMPY)
    if column.ndim == 1:
        return text[1:-1].split(b",")
    return list(map(b"[%b]".__mod__, text[2:-2].split(b"],[")))


def _merged(pieces: list[Any], n: int) -> list[Any]:
    """``pieces`` with adjacent constants joined, each constant repeated ``n`` times."""
    merged: list[Any] = []
    for piece in pieces:
        if isinstance(piece, bytes) and merged and isinstance(merged[-1], bytes):
            merged[-1] += piece
        else:
            merged.append(piece)
    return [repeat(piece, n) if isinstance(piece, bytes) else piece for piece in merged]


def _length(values: dict[str, Column]) -> int:
    for column in values.values():
        return _length(column) if isinstance(column, dict) else len(column)
    return 0


def _cells(column: Column) -> Iterator[Any] | list[Any]:
    """``column``'s values as Python objects, one per row."""
    if isinstance(column, dict):
        names = list(column)
        return [dict(zip(names, cells)) for cells in zip(*(_cells(column[n]) for n in names))]
    return column.tolist() if isinstance(column, np.ndarray) else column


def _cell(column: Column, i: int) -> Any:
    if isinstance(column, dict):
        return {name: _cell(inner, i) for name, inner in column.items()}
    return column[i].tolist() if isinstance(column, np.ndarray) else column[i]
