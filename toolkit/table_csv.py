"""CSV files as Arrow batches of text cells, for ``applied_aitk.table_files``: read in blocks of
whole lines (``line_blocks``), the header and dialect found from the first lines, each block
parsed by Arrow in one call.

A block with no quote, valid UTF-8 and one Arrow row (or one invalid row) per line is parsed
as it is, with no Python object per line; any other block is checked line by line first: a
blank line is skipped; a line that is not UTF-8, holds an odd number of quotes or has the wrong
number of fields is an error for that line alone."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from applied_aitk.errors import InputError
from applied_aitk.io import BOM, LONE_CR, open_text_bytes, text_encoding
from applied_aitk.table_files import DELIMITERS, FLOAT32_MAX, Batch, _decimal, _require, excel_separator

BLOCK_BYTES = 1 << 20
CR_INSIDE = "a carriage return inside the line (expected one record a line)"
WHITESPACE = " \t\n\r\x0b\x0c"  # what ``bytes.strip()`` removes: a line of only these is blank


@dataclass
class Lines:
    """``count`` whole lines of a file from line number ``first``, joined by ``\\n`` in ``data``
    (UTF-8 bytes, no newline at the end)."""

    first: int
    count: int
    data: bytes

    def split(self) -> list[bytes]:
        return self.data.split(b"\n")

    def head(self) -> bytes:
        """The first line."""
        end = self.data.find(b"\n")
        return self.data if end < 0 else self.data[:end]

    def rest(self) -> Lines | None:
        """The lines after the first; None when there are none."""
        if self.count == 1:
            return None
        return Lines(self.first + 1, self.count - 1, self.data[self.data.find(b"\n") + 1 :])


def csv_batches(path: Path, wanted: list[str], numeric: Iterable[str] = ()) -> Iterator[Batch]:
    """The CSV in blocks of whole lines, parsed by Arrow. A first line that opens a JSON object:
    JSON lines (stdin has no name to tell). The ``numeric`` columns of a plain block whose every
    such cell is a number come as float64 columns (``_arrow_rows``), all others as text."""
    blocks = line_blocks(path)
    block = _past_blank(next(blocks, None), blocks)
    if block is None:  # no lines, or only blank ones: an empty file
        return
    if block.head().lstrip(b"\xef\xbb\xbf \t").startswith(b"{"):  # JSON lines, e.g. on stdin
        from applied_aitk.table_json import json_blocks

        yield from json_blocks(_chain([block], blocks), wanted)
        return
    hinted = excel_separator(block.head())
    if hinted is not None:
        block = _past_blank(block.rest() or next(blocks, None), blocks)
        if block is None:
            return
    first_lines = block.data.split(b"\n", 201)
    delimiter, header = _header(first_lines[0], wanted, hinted, block.first)
    _require(header, wanted)
    decimal = _decimal(first_lines[1:201], delimiter)
    rest = block.rest()
    for lines in _chain([rest] if rest is not None else [], blocks):
        yield _parse_block(lines, header, wanted, delimiter, decimal, numeric)


def _past_blank(block: Lines | None, blocks: Iterator[Lines]) -> Lines | None:
    """``block`` from its first line that is not blank (a byte-order mark and white space only),
    taking the next blocks as needed; None when no such line is left."""
    while block is not None:
        if block.head().removeprefix(b"\xef\xbb\xbf").strip(WHITESPACE.encode()):
            return block
        block = block.rest() or next(blocks, None)
    return None


def _header(line: bytes, wanted: list[str], delimiter: str | None = None, number: int = 1) -> tuple[str, list[str]]:
    """(the delimiter, the column names): ``delimiter`` when given, else the first delimiter
    whose fields hold every wanted column, else the one that gives the most fields (then a column is missing)."""
    if (nul := line.find(b"\x00")) >= 0:
        raise InputError(f"line {number}: NUL byte at byte {nul} (UTF-16 needs a byte-order mark; expected UTF-8)")
    try:
        text = line.decode("utf-8").rstrip("\r")
        if "\r" in text:  # one "line" of the whole file: Excel for Mac's "CSV (Macintosh)"
            raise InputError(f"line {number}: {LONE_CR}")
        headers = {d: next(csv.reader([text], delimiter=d)) for d in ([delimiter] if delimiter else DELIMITERS)}
    except (UnicodeDecodeError, csv.Error, StopIteration) as e:
        raise InputError(f"line {number}: cannot read the header ({e})") from None
    for delimiter, header in headers.items():
        if all(column in header for column in wanted):
            return delimiter, header
    return max(headers.items(), key=lambda item: len(item[1]))


def _chain(*parts: Iterable[Lines]) -> Iterator[Lines]:
    for part in parts:
        yield from part


def line_blocks(path: Path) -> Iterator[Lines]:
    """The lines of ``path`` (``-``: stdin) as UTF-8, in blocks of about BLOCK_BYTES. InputError
    when the file cannot be read or decoded."""
    stream = open_text_bytes(path)
    try:
        encoding, _ = text_encoding(stream)
        carry, number = b"", 1
        for chunk in _utf8_chunks(stream, encoding):
            data = carry + chunk
            end = data.rfind(b"\n")
            if end < 0:
                carry = data
                continue
            carry = data[end + 1 :]
            count = data.count(b"\n", 0, end) + 1
            yield Lines(number, count, _without_boms(data[:end]))
            number += count
        if carry:
            yield Lines(number, 1, _without_boms(carry))
    except (OSError, EOFError) as e:
        raise InputError(f"cannot read ({e})") from None
    finally:
        if str(path) != "-":
            stream.close()


def _without_boms(lines: bytes) -> bytes:
    """``lines`` (whole lines) without a UTF-8 byte-order mark at the start of a line: files joined
    with ``cat``, each with its own mark."""
    if BOM not in lines:
        return lines
    return lines.removeprefix(BOM).replace(b"\n" + BOM, b"\n")


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


def _parse_block(lines: Lines, header: list[str], wanted: list[str], delimiter: str, decimal: str,
                 numeric: Iterable[str] = ()) -> Batch:
    """Parse a block with Arrow in one call when it is plain: no quote, valid UTF-8, no carriage
    return but in line ends, and one row (or one invalid row) per line, so that rows and lines
    correspond; otherwise ``_checked_block``."""
    block = lines.data
    if b'"' in block or _not_utf8(block) or (b"\r" in block and block.count(b"\r") != block.count(b"\r\n") + block.endswith(b"\r")):
        return _checked_block(lines, header, wanted, delimiter, decimal)
    numbers = np.arange(lines.first, lines.first + lines.count)
    batch = _arrow_rows(block, numbers, header, wanted, delimiter, decimal, {}, numeric)
    return _checked_block(lines, header, wanted, delimiter, decimal) if batch is None else batch


def _checked_block(lines: Lines, header: list[str], wanted: list[str], delimiter: str, decimal: str) -> Batch:
    """A block that is not plain: lines Arrow must not see (blank, not UTF-8, an odd number of
    quotes) are set aside, the rest parsed in one call, or line by line if Arrow refuses them."""
    import pyarrow as pa

    errors: dict[int, str] = {}
    kept, kept_numbers = [], []
    for number, line in enumerate(lines.split(), lines.first):
        reason = line_problem(line)
        if reason == "blank":
            continue
        if reason is not None:
            errors[number] = reason
            continue
        kept.append(line)
        kept_numbers.append(number)
    numbers = np.array(kept_numbers, dtype=np.int64)
    if not kept:
        return Batch(numbers, {c: pa.array([], pa.string()) for c in wanted}, errors, decimal)
    batch = _arrow_rows(b"\n".join(kept), numbers, header, wanted, delimiter, decimal, errors)
    return _parse_lines(numbers, kept, header, wanted, delimiter, errors, decimal) if batch is None else batch


def _arrow_rows(block: bytes, numbers: np.ndarray, header: list[str], wanted: list[str], delimiter: str, decimal: str,
                errors: dict[int, str], numeric: Iterable[str] = ()) -> Batch | None:
    """The lines of ``block`` (line numbers ``numbers``) parsed by Arrow in one call: a row with the
    wrong number of fields is an error for its line (added to ``errors``), a line of only white
    space is blank. None when Arrow refuses the block or its rows are not its lines (it skips
    empty lines and splits a line at a carriage return).

    The ``numeric`` columns are parsed as float64 in that call when every cell is a finite number
    within float32's range (``decimal`` "."; the numbers the text path reads the same way: Arrow's
    parser, spaces and tabs around them ignored); a block with a cell that is not (empty, text,
    NaN, too large) is parsed again with every column as text, so its error can quote the cell."""
    import pyarrow as pa

    invalid: list[tuple[int, str | None]] = []

    def on_invalid(row) -> str:
        blank = not row.text.strip(WHITESPACE)
        invalid.append((row.number, None if blank else f"expected {row.expected_columns} fields, got {row.actual_columns}"))
        return "skip"

    table = _numeric_table(block, header, wanted, delimiter, on_invalid, numeric) if decimal == "." else None
    if table is None:
        invalid.clear()
        try:
            table = _arrow_csv(block, header, wanted, delimiter, on_invalid)
        except pa.ArrowInvalid:
            return None
    if table.num_rows + len(invalid) != len(numbers):
        return None
    if invalid:
        skipped = np.zeros(len(numbers), dtype=bool)
        for row_number, reason in invalid:
            skipped[row_number - 1] = True
            if reason is not None:
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
        if (invalid or table.num_rows != 1) and b"\r" in line.rstrip(b"\r"):  # Arrow ended a row at it
            invalid.insert(0, CR_INSIDE)
        elif not invalid and table.num_rows != 1:
            invalid.append(CR_INSIDE)
        if invalid:
            errors[number] = invalid[0]
        else:
            tables.append(table)
            kept.append(number)
    if not tables:
        return Batch(np.array(kept, dtype=np.int64), {c: pa.array([], pa.string()) for c in wanted}, errors, decimal)
    table = pa.concat_tables(tables)
    return Batch(np.array(kept, dtype=np.int64), {c: table.column(c).combine_chunks() for c in wanted}, errors, decimal)


def _numeric_table(block: bytes, header: list[str], wanted: list[str], delimiter: str, on_invalid, numeric: Iterable[str]) -> Any:
    """``_arrow_csv`` with the ``numeric`` columns as float64; None when there are none or a cell of
    one is not a finite number within float32's range."""
    import pyarrow as pa

    numeric = [c for c in numeric if c in wanted]
    if not numeric:
        return None
    try:
        table = _arrow_csv(block, header, wanted, delimiter, on_invalid, numeric)
    except pa.ArrowInvalid:  # a cell that is not a number (or a block Arrow refuses as text too)
        return None
    with np.errstate(invalid="ignore"):
        fine = all((np.abs(table.column(c).to_numpy()) <= FLOAT32_MAX).all() for c in numeric)  # NaN is not
    return table if fine else None


def _arrow_csv(block: bytes, header: list[str], wanted: list[str], delimiter: str, on_invalid, numeric: Iterable[str] = ()) -> Any:
    """Whole CSV lines (no header) as an Arrow table of the ``wanted`` columns, as text but the
    ``numeric`` ones, as float64 (ArrowInvalid when a cell of one is not a number)."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    types = {c: pa.string() for c in wanted} | {c: pa.float64() for c in numeric}

    return pcsv.read_csv(
        pa.BufferReader(block),
        read_options=pcsv.ReadOptions(column_names=header, use_threads=False, block_size=max(len(block) + 1, 1 << 16)),
        parse_options=pcsv.ParseOptions(delimiter=delimiter, invalid_row_handler=on_invalid),
        convert_options=pcsv.ConvertOptions(
            include_columns=wanted, column_types=types,
            strings_can_be_null=False, quoted_strings_can_be_null=False, null_values=[],
        ),
    )


def _not_utf8(block: bytes) -> bool:
    if block.isascii():  # no copy, unlike decoding
        return False
    try:
        block.decode("utf-8")
        return False
    except UnicodeDecodeError:
        return True


def line_problem(line: bytes, quotes: bool = True) -> str | None:
    """"blank" for a line of only white space, a reason for a line Arrow must not parse (not UTF-8;
    ``quotes``: an odd number of quotes), else None."""
    if not line.strip():
        return "blank"
    try:
        line.decode("utf-8")
    except UnicodeDecodeError as e:
        return f"not valid UTF-8 (byte {e.start} of the line)"
    if quotes and line.count(b'"') % 2:
        return "unbalanced quote (a quoted field never closes on this line)"
    return None
