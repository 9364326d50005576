"""Reading tables: CSV in the dialects spreadsheets export (comma, semicolon with decimal commas,
tab, pipe), gzip-compressed CSV, and Parquet.

The delimiter and decimal mark are settings; left empty, the delimiter is the one Excel's
first-line hint ``sep=X`` names (that line is not the header), and otherwise both are found
from the file's first lines: the delimiter that splits every line into the same number of
fields, and a decimal comma when the delimiter is not a comma and the numbers are written ``1,5`` rather than ``1.5``.

A CSV line that cannot be one row (not valid UTF-8, an unbalanced quote, too many or too few
fields) is left out and reported by line number; the other lines are read."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import pandas as pd

from applied_aitk import AitkError
from applied_aitk.console import get_logger
from applied_aitk.errors import InputError

logger = get_logger(__name__)

DELIMITERS = (",", ";", "\t", "|")
SUFFIXES = (".csv", ".tsv", ".parquet", ".csv.gz", ".tsv.gz")
COMMA_NUMBER = re.compile(r'^"?-?\d+,\d+"?$')
DOT_NUMBER = re.compile(r'^"?-?\d+\.\d+"?$')
SAMPLE_CHARS = 1 << 16


class EmptyTable(AitkError):
    """A file with no lines at all (``applied_aitk.io.read_lines`` has warned about it)."""


def read_table(path: Path, delimiter: str = "", decimal: str = "", columns: list[str] | None = None,
               bad_lines: dict[int, str] | None = None) -> pd.DataFrame:
    """A CSV or Parquet file (``-``: CSV on stdin) as a DataFrame, only ``columns`` when given;
    AitkError if it cannot be read (or lacks one of ``columns``).

    ``delimiter`` (``tab`` for a tab) and ``decimal`` empty: found from the file (see the module's
    docstring). CSV lines that cannot be a row go into ``bad_lines`` (reason by line number, the
    header being line 1); without it, each is logged as a warning.

    The frame's index is each row's line in the file as an editor counts it (the header is line
    1), for messages to name; in a Parquet file, the row number from 1."""
    is_parquet = path.suffix.lower() == ".parquet"
    try:
        if is_parquet:
            frame = pd.read_parquet(path, columns=columns)
            frame.index = pd.RangeIndex(1, len(frame) + 1)
            return frame
        if str(path) != "-" and not path.exists():
            raise FileNotFoundError(path)
        text, bad, sep, numbers = _good_lines(path, {"tab": "\t"}.get(delimiter, delimiter))
        if not text:
            raise EmptyTable(f"{path}: empty, no records")
        for line, reason in bad.items():
            if bad_lines is None:
                logger.warning(f"{path}:{line}: {reason}; the line is left out")
            else:
                bad_lines[line] = reason
        mark = decimal or sniff_decimal(text, sep)
        frame = pd.read_csv(io.StringIO(text), sep=sep, decimal=mark, usecols=columns, dtype=str if columns else None)
        if len(frame) == len(numbers):  # a row per kept line (always, unless pandas reads a line its own way)
            frame.index = pd.Index(numbers)
        return _comma_decimals(frame) if mark == "," and not columns else frame
    except FileNotFoundError:
        raise AitkError(f"{path}: no such file") from None
    except AitkError:
        raise
    except Exception as e:
        raise AitkError(f"{path}: cannot read as {'Parquet' if is_parquet else 'CSV'}: {e}") from None


def _comma_decimals(frame: pd.DataFrame) -> pd.DataFrame:
    """Columns pandas left as text (one of their cells is not a number) with their ``1,5`` cells
    written ``1.5``, so that converting them names the cell at fault, not every decimal comma."""
    for name in frame.columns:
        column = frame[name]
        if not pd.api.types.is_string_dtype(column):
            continue
        numbers = column.str.fullmatch(r"-?\d+,\d+", na=False)
        if numbers.any():
            frame[name] = column.where(~numbers, column.str.replace(",", ".", regex=False))
    return frame


def _good_lines(path: Path, delimiter: str) -> tuple[str, dict[int, str], str, list[int]]:
    """(the lines that can be rows, the header first, as one text; reason by line number for the
    others; the delimiter: ``delimiter``, else Excel's first-line hint ``sep=X``, else sniffed;
    the line number of each row kept).

    Decoded line by line (gzip undone, a UTF-8 or UTF-16 byte-order mark honoured, else UTF-8)."""
    from applied_aitk.io import LONE_CR, read_lines
    from applied_aitk.table_files import excel_separator

    lines = list(read_lines(path))
    if lines and lines[0].text is not None and (hinted := excel_separator(lines[0].text)) is not None:
        lines, delimiter = lines[1:], delimiter or hinted
    if not lines:
        return "", {}, delimiter or ",", []
    if lines[0].error is not None:
        raise InputError(lines[0].message(str(path)))
    if "\r" in lines[0].text.rstrip("\r"):
        raise InputError(f"{path}:{lines[0].number}: {LONE_CR}")
    sep = delimiter or sniff_delimiter("\n".join(line.text for line in lines[:50] if line.text is not None) + "\n")
    width = len(next(csv.reader([lines[0].text], delimiter=sep)))
    kept, bad, numbers = [lines[0].text], {}, []
    for line in lines[1:]:
        if line.error is not None:
            bad[line.number] = line.error
        elif line.text.count('"') % 2:
            bad[line.number] = "unbalanced quote (a quoted field never closes on this line)"
        elif line.text.count(sep) + 1 != width and (fields := len(next(csv.reader([line.text], delimiter=sep)))) != width:
            bad[line.number] = f"expected {width} fields, got {fields}"
        else:
            kept.append(line.text)
            numbers.append(line.number)
    return "\n".join(kept) + "\n", bad, sep, numbers


def sniff_delimiter(text: str) -> str:
    """The delimiter that gives every one of the first lines the same number of fields (most fields wins)."""
    lines = [line for line in text[:SAMPLE_CHARS].splitlines()[:50] if line.strip()]
    if len(lines) > 1 and not text[:SAMPLE_CHARS].endswith("\n"):
        lines = lines[:-1]  # the sample may cut the last line short
    best, most = ",", 0
    for candidate in DELIMITERS:
        counts = {line.count(candidate) for line in lines}
        if len(counts) == 1 and (count := counts.pop()) > most:
            best, most = candidate, count
    return best


def sniff_decimal(text: str, delimiter: str) -> str:
    """``,`` when the fields of the first lines hold more numbers like ``1,5`` than like ``1.5``."""
    if delimiter == ",":
        return "."
    fields = [f.strip() for line in text[:SAMPLE_CHARS].splitlines()[:200] for f in line.split(delimiter)]
    commas = sum(bool(COMMA_NUMBER.match(f)) for f in fields)
    dots = sum(bool(DOT_NUMBER.match(f)) for f in fields)
    return "," if commas > dots else "."


def input_files(path: Path) -> list[Path]:
    """A file, or the CSV, TSV and Parquet files in a folder (recursively, sorted; gzip too)."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.lower().endswith(SUFFIXES))
        if not files:
            raise AitkError(f"{path}: no .csv, .tsv or .parquet files")
        return files
    return [path]
