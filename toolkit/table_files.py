"""Table files as Arrow batches of text cells, for ``applied_aitk.tables``: CSV (also gzipped; UTF-8
with or without a byte-order mark, or UTF-16 with one), JSON lines (``.jsonl``, ``.ndjson``: one
``{column: value}`` object a line, the records `aitk serve` takes) and Parquet.

CSV is read in blocks of whole lines. A first line ``sep=X`` (the hint Excel writes and reads)
sets the delimiter to X and the header is the line after it. Otherwise the dialect is found
from the header: the delimiter
(comma, semicolon, tab or pipe) that splits it into fields holding every wanted column, and,
where that is not a comma, a decimal comma when the first lines hold more numbers written
``1,5`` than ``1.5`` (spreadsheets in much of Europe export ``;`` with ``1,5``). Every line is
checked before Arrow parses it: a blank line is skipped; a line that is not UTF-8, holds an odd
number of quotes or has the wrong number of fields is an error for that line alone."""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from applied_aitk.errors import InputError
from applied_aitk.io import base_suffix, open_binary, text_encoding

BLOCK_BYTES = 1 << 20
DELIMITERS = (",", ";", "\t", "|")
SEP_HINT = re.compile(r'^"?sep=([^"\r\n])"?\s*$', re.IGNORECASE)
COMMA_NUMBER = re.compile(rb'^"?[-+]?\d+,\d+(?:[eE][-+]?\d+)?"?$')
BLANK_LINE = re.compile(r"^[ \t\r\f\v]*$", re.MULTILINE)
DOT_NUMBER = re.compile(rb'^"?[-+]?\d*\.\d+(?:[eE][-+]?\d+)?"?$')


@dataclass
class Batch:
    """Rows Arrow parsed (``lines``: their line numbers, ``columns``: Arrow arrays), lines it
    could not (``errors``: reason by line number), and the file's decimal mark."""

    lines: np.ndarray
    columns: dict[str, Any]
    errors: dict[int, str]
    decimal: str = "."


def table_batches(path: Path, wanted: list[str]) -> Iterator[Batch]:
    """Batches of the ``wanted`` columns of a CSV (``-``: stdin) or Parquet file.

    InputError (the file as a whole cannot be read: a missing column, a header that is not
    text, a broken gzip or Parquet file) names what is wrong, without the file's name."""
    suffix = base_suffix(path)
    if suffix == ".parquet":
        return _parquet_batches(path, wanted)
    from applied_aitk.table_json import JSON_LINES, json_batches

    return json_batches(path, wanted) if suffix in JSON_LINES else _csv_batches(path, wanted)


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
    missing = [c for c in wanted if c not in header]
    if missing:
        shown = ", ".join(header[:12]) + ("..." if len(header) > 12 else "")
        named = ", ".join(map(repr, missing[:5])) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise InputError(f"missing column{'s' if len(missing) > 1 else ''} {named} (columns: {shown})")


def _csv_batches(path: Path, wanted: list[str]) -> Iterator[Batch]:
    """The CSV in blocks of whole lines: each line checked (UTF-8, balanced quotes), parsed by Arrow.
    A first line that opens a JSON object: JSON lines (stdin has no name to tell)."""
    blocks = _line_blocks(path)
    header_block = next(blocks, None)
    if header_block is None:
        return
    first, header_lines = header_block
    if header_lines[0].lstrip(b"\xef\xbb\xbf \t").startswith(b"{"):  # JSON lines, e.g. on stdin
        from applied_aitk.table_json import json_blocks

        yield from json_blocks(_chain([header_block], blocks), wanted)
        return
    hinted = excel_separator(header_lines[0])
    if hinted is not None:
        first, header_lines = first + 1, header_lines[1:]
        if not header_lines:
            first, header_lines = next(blocks, (first, [b""]))
    delimiter, header = _header(header_lines[0], wanted, hinted, first)
    _require(header, wanted)
    decimal = _decimal(header_lines[1:201], delimiter)
    rest = [(first + 1, header_lines[1:])]
    for start, lines in _chain(rest, blocks):
        if lines:
            yield _parse_block(start, lines, header, wanted, delimiter, decimal)


def excel_separator(line: bytes | str) -> str | None:
    """The delimiter X of Excel's first-line hint ``sep=X``; None when ``line`` is no such hint."""
    text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
    found = SEP_HINT.match(text.lstrip("\ufeff"))
    return found.group(1) if found else None


def _header(line: bytes, wanted: list[str], delimiter: str | None = None, number: int = 1) -> tuple[str, list[str]]:
    """(the delimiter, the column names): ``delimiter`` when given, else the first delimiter
    whose fields hold every wanted column, else the one that gives the most fields (then a column is missing)."""
    if (nul := line.find(b"\x00")) >= 0:
        raise InputError(f"line {number}: NUL byte at byte {nul} (UTF-16 needs a byte-order mark; expected UTF-8)")
    try:
        text = line.decode("utf-8").rstrip("\r")
        headers = {d: next(csv.reader([text], delimiter=d)) for d in ([delimiter] if delimiter else DELIMITERS)}
    except (UnicodeDecodeError, csv.Error, StopIteration) as e:
        raise InputError(f"line {number}: cannot read the header ({e})") from None
    for delimiter, header in headers.items():
        if all(column in header for column in wanted):
            return delimiter, header
    return max(headers.items(), key=lambda item: len(item[1]))


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
            (text, numbers), skip, delimiter, decimal = json_lines_as_csv(path), 0, ",", "."
        else:
            with open_text(path) as f:
                text = f.read()
            hinted = excel_separator(text[:64].split("\n", 1)[0])
            skip = int(hinted is not None)
            sample = text[: 1 << 16].splitlines()[skip:200]
            lines = [line.encode("utf-8", "surrogatepass") for line in sample if line.strip()]
            delimiter = hinted or _most_fields(lines)
            decimal = _decimal(lines[1:], delimiter)
        if text_cells:
            frame = pd.read_csv(io.StringIO(text), sep=delimiter, dtype=str, keep_default_na=False, skiprows=skip)
        else:
            frame = pd.read_csv(io.StringIO(text), sep=delimiter, decimal=decimal, skiprows=skip)
    except (ValueError, OSError, pd.errors.ParserError) as e:
        raise InputError(f"{name_of(path)}: cannot read the table ({str(e).strip()})") from None
    if numbers is None or len(numbers) != len(frame):
        numbers = _record_lines(text, skip, delimiter, len(frame))
    frame.index = pd.Index(numbers, name="line")
    if decimal == "," and text_cells:
        frame = frame.apply(lambda column: column.str.replace(r"^([-+]?\d+),(\d+(?:[eE][-+]?\d+)?)$", r"\1.\2", regex=True))
    return frame


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


def _chain(*parts):
    for part in parts:
        yield from part


def _line_blocks(path: Path) -> Iterator[tuple[int, list[bytes]]]:
    """(number of the first line, the lines) in blocks of about BLOCK_BYTES, as UTF-8 bytes."""
    stream = open_binary(path)
    try:
        encoding, _ = text_encoding(stream)
        chunks = _utf8_chunks(stream, encoding)
        carry, number = b"", 1
        for chunk in chunks:
            lines = (carry + chunk).split(b"\n")
            carry = lines.pop()
            if lines:
                yield number, lines
                number += len(lines)
        if carry:
            yield number, [carry]
    except (OSError, EOFError) as e:
        raise InputError(f"cannot read ({e})") from None
    finally:
        if str(path) != "-":
            stream.close()


def _utf8_chunks(stream: Any, encoding: str) -> Iterator[bytes]:
    if encoding == "utf-8":
        while chunk := stream.read(BLOCK_BYTES):
            yield chunk
        return
    import codecs

    decoder = codecs.getincrementaldecoder(encoding)()
    offset = 2
    while True:
        chunk = stream.read(BLOCK_BYTES)
        try:
            text = decoder.decode(chunk, final=not chunk)
        except UnicodeDecodeError as e:
            raise InputError(f"not valid {encoding.upper()} at byte {offset + e.start}") from None
        offset += len(chunk)
        if text:
            yield text.encode("utf-8", "surrogatepass")
        if not chunk:
            return


def _parse_block(start: int, raw_lines: list[bytes], header: list[str], wanted: list[str], delimiter: str, decimal: str) -> Batch:
    """Parse whole lines with Arrow; lines it must not see (blank, not UTF-8, an odd number of
    quotes) and rows with the wrong number of fields become errors by line number."""
    import pyarrow as pa

    block = b"\n".join(raw_lines)
    errors: dict[int, str] = {}
    numbers = np.arange(start, start + len(raw_lines))
    if b"\n\n" in block or b'"' in block or b"\r\n\r" in block or _not_utf8(block) or not raw_lines[-1].strip():
        kept, kept_numbers = [], []
        for number, line in zip(numbers.tolist(), raw_lines):
            reason = _line_problem(line)
            if reason == "blank":
                continue
            if reason is not None:
                errors[number] = reason
                continue
            kept.append(line)
            kept_numbers.append(number)
        block, numbers = b"\n".join(kept), np.array(kept_numbers, dtype=np.int64)
    if not len(numbers):
        return Batch(numbers, {c: pa.array([], pa.string()) for c in wanted}, errors, decimal)
    invalid: list[tuple[int, str]] = []

    def on_invalid(row) -> str:
        invalid.append((row.number, f"expected {row.expected_columns} fields, got {row.actual_columns}"))
        return "skip"

    try:
        table = _arrow_csv(block, header, wanted, delimiter, on_invalid)
    except pa.ArrowInvalid:  # something Arrow will not parse in this block: find its line
        return _parse_lines(numbers, block.split(b"\n"), header, wanted, delimiter, errors, decimal)
    if invalid:
        skipped = np.zeros(len(numbers), dtype=bool)
        for row_number, reason in invalid:
            skipped[row_number - 1] = True
            errors[int(numbers[row_number - 1])] = reason
        numbers = numbers[~skipped]
    return Batch(numbers, {c: table.column(c).combine_chunks() for c in wanted}, errors, decimal)


def _parse_lines(numbers: np.ndarray, lines: list[bytes], header: list[str], wanted: list[str], delimiter: str,
                 errors: dict[int, str], decimal: str) -> Batch:
    """The slow way, for a block Arrow refused as a whole: each line parsed on its own."""
    import pyarrow as pa

    tables, kept = [], []
    for number, line in zip(numbers.tolist(), lines):
        invalid: list[str] = []

        def on_invalid(row) -> str:
            invalid.append(f"expected {row.expected_columns} fields, got {row.actual_columns}")
            return "skip"

        try:
            table = _arrow_csv(line, header, wanted, delimiter, on_invalid)
        except pa.ArrowInvalid as e:
            invalid.append(str(e).splitlines()[0])
        if invalid:
            errors[number] = invalid[0]
        else:
            tables.append(table)
            kept.append(number)
    if not tables:
        return Batch(np.array(kept, dtype=np.int64), {c: pa.array([], pa.string()) for c in wanted}, errors, decimal)
    table = pa.concat_tables(tables)
    return Batch(np.array(kept, dtype=np.int64), {c: table.column(c).combine_chunks() for c in wanted}, errors, decimal)


def _arrow_csv(block: bytes, header: list[str], wanted: list[str], delimiter: str, on_invalid) -> Any:
    """Whole CSV lines (no header) as an Arrow table of the ``wanted`` columns, all as text."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    return pcsv.read_csv(
        pa.BufferReader(block),
        read_options=pcsv.ReadOptions(column_names=header, use_threads=False, block_size=max(len(block) + 1, 1 << 16)),
        parse_options=pcsv.ParseOptions(delimiter=delimiter, invalid_row_handler=on_invalid),
        convert_options=pcsv.ConvertOptions(
            include_columns=wanted, column_types={c: pa.string() for c in wanted},
            strings_can_be_null=False, quoted_strings_can_be_null=False, null_values=[],
        ),
    )


def _not_utf8(block: bytes) -> bool:
    try:
        block.decode("utf-8")
        return False
    except UnicodeDecodeError:
        return True


def _line_problem(line: bytes, quotes: bool = True) -> str | None:
    """"blank" for an empty line, a reason for a line Arrow must not parse (not UTF-8; ``quotes``:
    an odd number of quotes), else None."""
    if not line.strip():
        return "blank"
    try:
        line.decode("utf-8")
    except UnicodeDecodeError as e:
        return f"not valid UTF-8 (byte {e.start} of the line)"
    if quotes and line.count(b'"') % 2:
        return "unbalanced quote (a quoted field never closes on this line)"
    return None
