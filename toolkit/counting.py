"""Counting the records of input files cheaply, before reading them, so that `predict` can show a
progress bar with a total and an ETA."""

from __future__ import annotations

from pathlib import Path

from applied_aitk.errors import InputError
from applied_aitk.io import base_suffix, open_text_bytes

TEXT_SUFFIXES = (".jsonl", ".ndjson", ".txt")
TABLE_SUFFIXES = (".csv", ".tsv")


def count_records(paths: list[Path]) -> int | None:
    """About how many records ``paths`` hold, cheaply, for a progress bar's total: a line per record
    in JSONL and text files, a row per record in CSV (less the header; these also gzipped) and Parquet (from its
    metadata), one record per other file (an image). None when stdin is among them."""
    total = 0
    for path in paths:
        suffix = base_suffix(path)
        if str(path) == "-":
            return None
        if suffix in TEXT_SUFFIXES or suffix in TABLE_SUFFIXES:
            total += max(0, _count_lines(path) - (suffix in TABLE_SUFFIXES))
        elif suffix == ".parquet":
            import pyarrow.parquet as pq

            try:
                total += pq.ParquetFile(path).metadata.num_rows
            except (OSError, ValueError):  # not a Parquet file (ArrowInvalid): reading it says so, as an error row
                pass
        else:
            total += 1
    return total


def _count_lines(path: Path, chunk: int = 1 << 20) -> int:
    """Lines in a text file (also gzipped), a last line without a newline included; 0 if it cannot
    be read (reading it later reports why)."""
    lines, last = 0, b"\n"
    try:
        with open_text_bytes(path) as f:
            while block := f.read(chunk):
                lines, last = lines + block.count(b"\n"), block[-1:]
    except (OSError, EOFError, InputError):
        return 0
    return lines + (last != b"\n")
