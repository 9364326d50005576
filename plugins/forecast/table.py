"""Reading tables: CSV in the dialects spreadsheets export (comma, semicolon with decimal commas,
tab, pipe), gzip-compressed CSV, and Parquet.

The delimiter and decimal mark are settings; left empty, they are found from the file's first
lines: the delimiter that splits every line into the same number of fields, and a decimal comma
when the delimiter is not a comma and the numbers are written ``1,5`` rather than ``1.5``."""

from __future__ import annotations

import io
import re
import sys
from pathlib import Path

import pandas as pd

from toolkit import AitkError

DELIMITERS = (",", ";", "\t", "|")
SUFFIXES = (".csv", ".tsv", ".parquet", ".csv.gz", ".tsv.gz")
COMMA_NUMBER = re.compile(r'^"?-?\d+,\d+"?$')
DOT_NUMBER = re.compile(r'^"?-?\d+\.\d+"?$')
SAMPLE_CHARS = 1 << 16


def read_table(path: Path, delimiter: str = "", decimal: str = "", columns: list[str] | None = None) -> pd.DataFrame:
    """A CSV or Parquet file (``-``: CSV on stdin) as a DataFrame, only ``columns`` when given;
    AitkError if it cannot be read (or lacks one of ``columns``).

    ``delimiter`` (``tab`` for a tab) and ``decimal`` empty: found from the file (see the module's docstring)."""
    is_parquet = path.suffix.lower() == ".parquet"
    try:
        if is_parquet:
            return pd.read_parquet(path, columns=columns)
        text = _text(path)
        sep = {"tab": "\t"}.get(delimiter, delimiter) or sniff_delimiter(text)
        mark = decimal or sniff_decimal(text, sep)
        return pd.read_csv(io.StringIO(text), sep=sep, decimal=mark, usecols=columns, dtype=str if columns else None)
    except FileNotFoundError:
        raise AitkError(f"{path}: no such file") from None
    except AitkError:
        raise
    except Exception as e:
        raise AitkError(f"{path}: cannot read as {'Parquet' if is_parquet else 'CSV'}: {e}") from None


def _text(path: Path) -> str:
    """The whole file as text: gzip undone, a UTF-8 or UTF-16 byte-order mark honoured, else UTF-8."""
    from toolkit.io import open_text

    if str(path) != "-" and not path.exists():
        raise FileNotFoundError(path)
    with open_text(path) as f:
        return f.read()


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
