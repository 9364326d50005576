"""The Predictor of a use case whose inputs are table rows: the plugin says which columns its
model needs and how it scores a batch of them; reading files (record by record or a batch at a
time), requests of `aitk serve` and bad rows are the core's (``applied_aitk.tables``).

Light at import (no numpy): plugins subclass it at module level, and `aitk --help` imports them."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from applied_aitk.usecase import Predictor, Record, RecordBatch

if TYPE_CHECKING:
    from applied_aitk.tables import Schema

TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson", ".parquet")
"""The files a table use case reads (``UseCase.input_suffixes``), each also gzipped: the formats
``applied_aitk.table_files`` reads (a folder skipped .tsv and .ndjson, which it reads when named)."""


class TablePredictor(Predictor):
    """Implement ``schema()`` and ``predict_columns(data)`` (or ``predict_batch(data)``, rows); everything else is done here.

    ``predict_batch`` gets ``data["numbers"]``, float32 [rows, len(schema.numbers)] (finite, or NaN
    for a missing cell the schema allows), and ``data["texts"]``, object [rows, len(schema.texts)]
    (str, None where empty), and returns one row per input row (a row may carry ``error``). Batch
    `predict` calls it on slices of the batches Arrow parsed, with no Python object per record
    but its output row; `aitk serve` and ``--engine ray`` call it through ``predict`` on records.
    ``predict_columns`` gets the same ``data`` and returns the rows as columns
    (``applied_aitk.columns.Columns``): batch `predict` then writes them as JSON lines without
    making the rows, and ``predict_batch`` makes them from it for everything else."""

    threaded_decode = False  # the records come decoded

    def schema(self) -> Schema:
        """The columns the model needs: ``applied_aitk.tables.Schema(numbers, texts, missing)``."""
        raise NotImplementedError

    def read(self, paths: Iterable[Path]) -> Iterator[Record]:
        """One record per table row (CSV or JSON lines, also gzipped, or Parquet), id "PATH:LINE"; a malformed
        row, a bad cell or a file without the schema's columns is an error record."""
        from applied_aitk.tables import read_records

        return read_records(paths, self.schema())

    def read_batches(self, paths: Iterable[Path]) -> Iterator[RecordBatch]:
        """The records of ``read``, a block of rows at a time (``applied_aitk.tables.read_batches``)."""
        from applied_aitk.tables import read_batches

        return read_batches(paths, self.schema())

    def from_json(self, value: Any, id: str) -> Record:
        """One row sent to `aitk serve` as ``{column: value}``, checked as a row of a file is."""
        from applied_aitk.tables import record_from_object

        return record_from_object(value, self.schema(), id)

    def from_json_batch(self, values: list[Any], ids: list[str]) -> list[Record]:
        """The rows of a batch of `aitk serve` requests, those of plain JSON numbers decoded in one numpy call."""
        from applied_aitk.tables import records_from_objects

        return records_from_objects(values, self.schema(), ids)

    def predict_batch(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        """The rows of ``predict_columns(data)``; a predictor without it implements this instead."""
        if type(self).predict_columns is Predictor.predict_columns:
            raise NotImplementedError(f"{type(self).__name__} implements neither predict_batch nor predict_columns")
        return self.predict_columns(data).rows()

    def predict(self, inputs: list[Any]) -> list[dict[str, Any]]:
        """``predict_batch`` on records' data ``(numbers, texts)``, as ``read`` and ``from_json`` give it."""
        from applied_aitk.tables import stacked

        return self.predict_batch(stacked(inputs, self.schema()))
