"""Output files of a batch run: rows written as JSONL, CSV or Parquet (by the extension, through a
temp file and a rename), read back for ``--resume``, and the strict JSON-lines encoding that turns a
row holding NaN or an infinity into an error row.

Parquet keeps lists and dicts as list and struct columns (element types unified over every row);
CSV holds them as JSON text."""

from __future__ import annotations

import json
import math
import numbers
import re
from collections.abc import Callable, Iterable, Iterator
from itertools import chain, islice
from pathlib import Path
from typing import Any

from applied_aitk.errors import AitkError
from applied_aitk.files import atomic_path

FORMATS = (".jsonl", ".csv", ".parquet")
_STRICT = json.JSONEncoder(ensure_ascii=False, allow_nan=False)  # refuses NaN and inf
_END = (b"",)
NULL = re.compile(rb"null")  # a regular expression finds it by its rare first letter, twice as fast as ``in``


def json_lines(rows: list[dict[str, Any]]) -> tuple[bytes, list[dict[str, Any]]]:
    """(``rows`` as UTF-8 JSON lines, the rows written): a row holding NaN or an infinity anywhere
    is written as an error row naming the field, so nothing non-finite reaches an output.

    The batch is encoded with orjson (one C call per row, no Python work per field). orjson writes
    NaN and inf as ``null``, so a batch whose text holds ``null`` is checked once more, the whole
    batch in one call of the standard library's strict encoder, and only a batch that fails that
    check (or that orjson cannot encode: numpy scalars, integers beyond 64 bits, text that is not
    valid Unicode) is encoded row by row."""
    import orjson

    try:
        text = b"\n".join(chain(map(orjson.dumps, rows), _END)) if rows else b""  # no copy to add the last newline
    except orjson.JSONEncodeError:
        return _row_by_row(rows)
    if NULL.search(text) and not _finite(rows):
        return _row_by_row(rows)
    return text, rows


def _finite(rows: list[dict[str, Any]]) -> bool:
    try:
        _STRICT.encode(rows)
        return True
    except (ValueError, TypeError):
        return False


def _row_by_row(rows: list[dict[str, Any]]) -> tuple[bytes, list[dict[str, Any]]]:
    rows = [finite_row(row) for row in rows]
    return b"".join([_encoded(row) + b"\n" for row in rows]), rows


def _encoded(row: dict[str, Any]) -> bytes:
    """One row as JSON; a value JSON cannot hold makes it an error row."""
    import orjson

    try:
        return orjson.dumps(row)
    except orjson.JSONEncodeError:
        pass
    try:  # what the standard library takes and orjson does not (numpy floats, huge ints, int keys)
        return json.dumps(row, ensure_ascii=True, allow_nan=False).encode("ascii")
    except (TypeError, ValueError) as e:
        error = {"id": row.get("id"), "error": f"the model gave an output JSON cannot hold ({e})"}
        return json.dumps(error, ensure_ascii=True).encode("ascii")


def finite_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` with each row holding NaN or an infinity made an error row (``finite_row``): the
    batch is looked at in one orjson call (which writes NaN and inf as ``null``), row by row only
    when its text holds ``null`` or orjson refuses it (2.7 -> 0.6 us a fraud row with explanations)."""
    import orjson

    try:
        if not NULL.search(orjson.dumps(rows)):
            return rows
    except orjson.JSONEncodeError:
        pass
    return [finite_row(row) for row in rows]


def finite_row(row: dict[str, Any]) -> dict[str, Any]:
    """``row``, or an error row naming its first field that holds NaN or an infinity."""
    found = _non_finite(row)
    if found is None:
        return row
    keys, value = found
    field = ".".join(str(key) for key in reversed(keys))
    return {"id": row.get("id"), "error": f"the model gave a non-finite value ({value}) for output field {field!r}"}


def finite(value: Any) -> bool:
    """Whether ``value`` (a JSON-able value: numbers, text, lists, dicts) holds no NaN or infinity."""
    return _non_finite(value) is None


_FINITE = frozenset({str, int, bool, type(None)})
"""Types that are never NaN or infinite: skipped without a closer look (a row is mostly these and floats)."""


def _non_finite(value: Any) -> tuple[list, float] | None:
    """(the keys to the first NaN or infinity in ``value``, innermost first; the value) or None."""
    kind = type(value)
    if kind is float:
        return None if math.isfinite(value) else ([], value)
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, (list, tuple)):
        items = enumerate(value)
    elif isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):  # numpy's floats, Decimal, ...
        return None if math.isfinite(value) else ([], float(value))
    else:
        return None
    for key, item in items:
        if type(item) in _FINITE:
            continue
        found = _non_finite(item)
        if found is not None:
            found[0].append(key)
            return found
    return None


def write_rows(rows: Callable[[], Iterable[dict[str, Any]]], out: Path) -> None:
    """Write rows to ``out`` by its extension, through a temp file renamed into place.

    ``rows`` gives a fresh iterator each call: CSV and Parquet read the rows twice (once for
    the columns, once to write) so that they are never all held in memory."""
    suffix = out.suffix.lower()
    if suffix not in FORMATS:
        raise AitkError(f"--out {out}: expected a file ending in {', '.join(FORMATS)}")
    with atomic_path(out) as tmp:
        if suffix == ".jsonl":
            write_jsonl(rows(), tmp)
        elif suffix == ".csv":
            _write_csv(rows, tmp)
        else:
            _write_parquet(rows, tmp)


def read_rows(path: Path) -> Iterator[dict[str, Any]]:
    """Rows of a finished output file (JSONL, CSV or Parquet)."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        yield from read_jsonl(path)
        return
    if suffix == ".parquet":  # list and struct columns come back as Python lists and dicts
        import pyarrow.parquet as pq

        yield from pq.read_table(path).to_pylist()
        return
    import pandas as pd

    for row in pd.read_csv(path, dtype=str, keep_default_na=False).to_dict("records"):
        yield {k: (None if v == "" else v) for k, v in row.items()}


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """The rows of a JSON-lines file, one per non-blank line."""
    with open(path, "rb") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def write_jsonl(rows: Iterable[dict[str, Any]], path: Path, chunk_size: int = 1024) -> None:
    """``rows`` as JSON lines in ``path`` (written in place: callers rename or journal it), encoded
    as ``json_lines`` does: a row holding NaN or an infinity becomes an error row."""
    with open(path, "wb") as f:
        for chunk in _chunks(iter(rows), chunk_size):
            f.write(json_lines(chunk)[0])


def _columns(rows: Iterable[dict[str, Any]]) -> list[str]:
    seen: dict[str, None] = {"id": None}
    for row in rows:
        seen.update(dict.fromkeys(row))
    seen.pop("error", None)
    return [*seen, "error"]


def _flat(value: Any) -> Any:
    """Lists and dicts as JSON text, for the flat formats."""
    return json.dumps(value, ensure_ascii=False) if isinstance(value, (list, dict)) else value


def _write_csv(rows, path: Path) -> None:
    import csv

    columns = _columns(rows())
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in rows():
            writer.writerow({k: _flat(v) for k, v in row.items()})


def _write_parquet(rows, path: Path, chunk_size: int = 10_000) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = _columns(rows())
    types = _arrow_types(rows(), columns)
    schema = pa.schema([(c, types[c]) for c in columns])
    with pq.ParquetWriter(path, schema) as writer:
        for chunk in _chunks(iter(rows()), chunk_size):
            table = {c: [_arrow_value(row.get(c), types[c]) for row in chunk] for c in columns}
            writer.write_table(pa.table(table, schema=schema))


def _arrow_types(rows: Iterable[dict[str, Any]], columns: list[str]) -> dict[str, Any]:
    """One Arrow type per column: bool, int64, float64, a list or struct type for lists and dicts
    (their element types unified over every row, e.g. list<double>), else string (JSON text for
    values no single type holds)."""
    import pyarrow as pa

    kinds: dict[str, set] = {c: set() for c in columns}
    nested: dict[str, dict[str, Any]] = {c: {} for c in columns}
    for row in rows:
        for c, v in row.items():
            if v is not None:
                kinds[c].add(type(v))
                if isinstance(v, (list, dict)):
                    t = _scalar_type(v)
                    nested[c][str(t)] = t
    types = {}
    for c, k in kinds.items():
        if k and k <= {bool}:
            types[c] = pa.bool_()
        elif k and k <= {int}:
            types[c] = pa.int64()
        elif k and k <= {int, float}:
            types[c] = pa.float64()
        elif k and k <= {list, dict} and len(k) == 1:
            types[c] = _unified(list(nested[c].values())) or pa.string()
        else:
            types[c] = pa.string()
    return types


def _scalar_type(value: Any) -> Any:
    import pyarrow as pa

    try:
        return pa.scalar(value).type
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return pa.string()


def _unified(types: list[Any]) -> Any:
    """The type every one of ``types`` converts to, or None (then the column is JSON text)."""
    import pyarrow as pa

    if not types or any(t == pa.string() for t in types):
        return None
    try:
        merged = pa.unify_schemas([pa.schema([("v", t)]) for t in types], promote_options="permissive").field("v").type
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return None
    return None if "struct<>" in str(merged) or "null" in str(merged) else merged


def _arrow_value(value: Any, arrow_type) -> Any:
    if value is None:
        return None
    if str(arrow_type) == "string":
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return value


def _chunks(items: Iterator[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    while chunk := list(islice(items, size)):
        yield chunk
