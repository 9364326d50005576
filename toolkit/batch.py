"""Batch inference over files: expand inputs, stream records, decode in threads, write rows; or,
for a predictor with the batch path (table rows), stream RecordBatches read a block ahead by a
thread and predict slices of their arrays, with no Python object per record but its row.

Rows go to a journal (``OUT.partial.jsonl``) as each batch finishes; when the run ends the
journal becomes ``OUT`` (JSONL, CSV or Parquet by its extension) through a temp file and a
rename, so OUT is never half-written. ``--resume`` keeps the rows of the journal (or of a
finished OUT) and skips their records. A bad record becomes a row with an ``error`` field.
OUT ``-`` writes the rows to stdout as JSON lines, each batch as it finishes. A use case's
``layout`` (``UseCase.layout``) may write a record's row as several rows; it applies as OUT is
written, so the journal and ``--resume`` keep one row per record."""

from __future__ import annotations

import dataclasses
import glob
import os
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from applied_aitk.batch_threads import collector_for_run, prefetched
from applied_aitk.columns import PredictedBatch, batch_output
from applied_aitk.console import bar, get_logger
from applied_aitk.errors import AitkError
from applied_aitk.io import has_suffix
from applied_aitk.journal import Journal, JournalWriter, Layout, StdoutJournal
from applied_aitk.usecase import Predictor, Record, RecordBatch

logger = get_logger(__name__)
__all__ = ["Journal", "Layout", "StdoutJournal", "expand_inputs", "run_batch", "predict_records", "batch_rows", "batch_output", "prefetched"]


def expand_inputs(specs: Iterable[str], suffixes: tuple[str, ...] = ()) -> list[Path]:
    """Files named by ``specs``: files, folders (recursively, files with ``suffixes``, also gzipped:
    ``.csv.gz``), globs, ``-`` (stdin). A file named twice is read once.

    AitkError (one line naming the spec and the file types looked for) when a spec names nothing."""
    paths: list[Path] = []
    kinds = f" ({', '.join(suffixes)}, also .gz)" if suffixes else ""
    for spec in specs:
        path = Path(spec)
        if spec == "-" or path.is_file():
            paths.append(path)
        elif path.is_dir():
            found = sorted(f for f in path.rglob("*") if f.is_file() and (not suffixes or has_suffix(f, suffixes)))
            if not found:
                raise AitkError(f"{spec}: no input files in this folder{kinds}")
            paths.extend(found)
        elif glob.has_magic(spec):
            matches = sorted(Path(m) for m in glob.glob(spec, recursive=True) if Path(m).is_file())
            if not matches:
                raise AitkError(f"{spec}: no files match{kinds}")
            paths.extend(matches)
        else:
            raise AitkError(f"{spec}: no such file or directory")
    return _once(paths)


def _once(paths: list[Path]) -> list[Path]:
    """``paths`` without repeats of the same file (their records would share ids)."""
    seen: set[Path] = set()
    unique = []
    for path in paths:
        key = path if str(path) == "-" else path.resolve()
        if key in seen:
            logger.warning(f"{path}: named more than once; read once")
            continue
        seen.add(key)
        unique.append(path)
    return unique


def predict_records(predictor: Predictor, records: list[Record]) -> list[dict[str, Any]]:
    """Decode and predict one batch; every record gets exactly one row, an error row if it failed."""
    return _predict_decoded(predictor, records, _decode_all(predictor, records))


def run_batch(
    predictor: Predictor,
    paths: list[Path],
    out: Path,
    batch_size: int = 32,
    resume: bool = False,
    workers: int | None = None,
    total: int | None = None,
    layout: Layout | None = None,
) -> dict[str, Any]:
    """Predict every record of ``paths`` into ``out`` on this machine (``-``: stdout); returns the
    run's summary. ``total``, the records expected (resumed ones included), sizes the progress bar;
    ``layout`` turns each record's row into the rows written (``UseCase.layout``).

    Each batch is decoded by one task of a thread pool of ``workers`` threads, up to ``workers``
    batches ahead of the model (inline when ``predictor.threaded_decode`` is False). A predictor
    with the batch path (``Predictor.read_batches``) is read and predicted a RecordBatch at a time."""
    journal = StdoutJournal(layout) if str(out) == "-" else Journal(out, resume, layout)
    resumed = Counter()
    inputs: set[str] | None = set() if journal.ids else None  # the ids read: what --resume keeps
    records = skip_done(predictor.read(paths), journal.ids, resumed, batch_size, inputs)

    decoders = workers or min(8, os.cpu_count() or 1)

    def batches() -> Iterator[list[dict[str, Any]] | PredictedBatch]:
        if reads_batches(predictor):  # the batch path: no Record per record
            for batch in prefetched(read_new(predictor.read_batches(paths), journal.ids, resumed, inputs)):
                for part in slices(batch, batch_size):
                    yield batch_output(predictor, part)
            return
        if not predictor.threaded_decode:  # decoding is trivial: a thread pool would only add its hand-offs
            for chunk in _chunks(records, batch_size):
                yield predict_records(predictor, chunk)
            return
        with ThreadPoolExecutor(decoders) as pool:
            pending: deque = deque()
            for chunk in _chunks(records, batch_size):
                pending.append((chunk, pool.submit(_decode_all, predictor, chunk)))
                if len(pending) > decoders:
                    chunk, decoded = pending.popleft()
                    yield _predict_decoded(predictor, chunk, decoded.result())
            for chunk, decoded in pending:
                yield _predict_decoded(predictor, chunk, decoded.result())

    remaining = None if total is None else max(0, total - len(journal.ids))
    with collector_for_run():
        return write_batches(batches(), journal, resumed, getattr(predictor, "provider", None), remaining, inputs)


@dataclass
class Counter:
    value: int = 0


def skip_done(records: Iterable[Record], done: set[str], skipped: Counter, size: int = 64,
              read_ids: set[str] | None = None) -> Iterator[Record]:
    """The records whose ids are not in ``done``, counting the others in ``skipped``; every id
    read (skipped or not) is added to ``read_ids`` when given. Ids are made unique (``UniqueIds``),
    ``size`` records at a time."""
    unique = UniqueIds()
    for chunk in _chunks(iter(records), size):
        ids = unique([record.id for record in chunk])
        chunk = [record if record.id == id else dataclasses.replace(record, id=id) for record, id in zip(chunk, ids)]
        if read_ids is not None:
            read_ids.update(ids)
        if done:
            kept = [record for record in chunk if record.id not in done]
            skipped.value += len(chunk) - len(kept)
            chunk = kept
        yield from chunk


class UniqueIds:
    """Makes the record ids of a run unique, the same way in every run: an id seen before is renamed
    ``ID#N`` (the second ``ID#2``, the third ``ID#3``); one warning line names the first repeated.
    A list of ids is checked with two set operations (looked up, then added); one by one only when it repeats an id."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.copies: dict[str, int] = {}  # copies of the ids seen more than once
        self.warned = False

    def __call__(self, ids: list[str]) -> list[str]:
        """``ids`` with each id seen before (in this list or an earlier one) renamed."""
        if self.seen.isdisjoint(ids):
            size = len(self.seen)
            self.seen.update(ids)
            if len(self.seen) - size == len(ids):
                return ids
            self.seen.difference_update(ids)  # the list repeats an id: back to the ids seen before it
        unique, repeated = [], None
        for id in ids:
            if id in self.seen:
                repeated = repeated or id
                copies = self.copies[id] = self.copies.get(id, 1) + 1
                id = f"{id}#{copies}"
                if id in self.seen:
                    self.copies[id] = self.copies.get(id, 1) + 1
            self.seen.add(id)
            unique.append(id)
        if repeated is not None and not self.warned:
            logger.warning(f"record id {repeated!r} appears more than once; later ones get #2, #3, ...")
            self.warned = True
        return unique


def reads_batches(predictor: Predictor) -> bool:
    """Whether ``predictor`` has the batch path (``read_batches`` and ``predict_batch``)."""
    return type(predictor).read_batches is not Predictor.read_batches


def read_new(batches: Iterable[RecordBatch], done: set[str], skipped: Counter,
             read_ids: set[str] | None = None) -> Iterator[RecordBatch]:
    """``skip_done`` for RecordBatches: ids made unique (but a ``unique`` batch's, unique as read),
    those in ``done`` left out (counted in ``skipped``), every id read added to ``read_ids`` when given."""
    unique = UniqueIds()
    for batch in batches:
        ids = batch.ids if batch.unique else unique(batch.ids)
        if ids is not batch.ids:
            batch = dataclasses.replace(batch, ids=ids)
        if read_ids is not None:
            read_ids.update(ids)
        if done and not done.isdisjoint(ids):
            keep = np.array([id not in done for id in ids], dtype=bool)
            skipped.value += int((~keep).sum())
            batch = selected(batch, np.flatnonzero(keep))
        if batch.ids:
            yield batch


def slices(batch: RecordBatch, size: int) -> Iterator[RecordBatch]:
    """``batch`` in parts of at most ``size`` records, in order."""
    if len(batch.ids) <= size:
        yield batch
        return
    for start in range(0, len(batch.ids), size):
        if batch.errors:
            yield selected(batch, np.arange(start, min(start + size, len(batch.ids))))
        else:
            yield RecordBatch(batch.ids[start : start + size], {k: v[start : start + size] for k, v in batch.data.items()})


def selected(batch: RecordBatch, positions: np.ndarray) -> RecordBatch:
    """The records of ``batch`` at ``positions`` (ascending indices into its ids), with their data and errors."""
    good = np.ones(len(batch.ids), dtype=bool)
    good[list(batch.errors)] = False
    row_of = np.cumsum(good) - 1  # position -> row of data (for a good record)
    rows = row_of[positions[good[positions]]]
    errors = {new: batch.errors[old] for new, old in enumerate(positions.tolist()) if old in batch.errors}
    return RecordBatch([batch.ids[i] for i in positions.tolist()], {k: v[rows] for k, v in batch.data.items()}, errors)


def batch_rows(predictor: Predictor, batch: RecordBatch) -> list[dict[str, Any]]:
    """Predict one RecordBatch: one row per id, in order; an error row for each record that could
    not be read or that the model could not take (``predict_batch`` raising is retried row by row)."""
    rows = _predict_batch_isolating(predictor, batch.data, len(batch.ids) - len(batch.errors))
    if not batch.errors:
        return [{"id": id, **row} for id, row in zip(batch.ids, rows)]
    predicted = iter(rows)
    return [{"id": id, "error": batch.errors[i]} if i in batch.errors else {"id": id, **next(predicted)}
            for i, id in enumerate(batch.ids)]


def _predict_batch_isolating(predictor: Predictor, data: dict[str, Any], count: int) -> list[dict[str, Any]]:
    """``predictor.predict_batch`` on ``count`` rows of ``data``; if it raises, row by row, so one bad row fails alone."""
    if not count:
        return []
    try:
        rows = predictor.predict_batch(data)
        if len(rows) != count:
            raise AitkError(f"predictor returned {len(rows)} rows for {count} inputs")
        return rows
    except Exception as e:
        if count == 1:
            return [{"error": str(e) if isinstance(e, AitkError) else f"{type(e).__name__}: {e}"}]
        return [row for i in range(count) for row in _predict_batch_isolating(predictor, {k: v[i : i + 1] for k, v in data.items()}, 1)]


def write_batches(batches: Iterable[list[dict[str, Any]] | PredictedBatch], journal: Journal, resumed: Counter, provider: str | None,
                  total: int | None = None, inputs: set[str] | None = None) -> dict[str, Any]:
    """Journal each batch of rows as it comes (in a thread: ``JournalWriter``), then write the output;
    returns the run's summary.
    ``total`` (records to predict, when known) gives the progress bar its length and ETA; ``inputs``,
    the ids of every record read, lets a resumed run leave out rows of records no longer given."""
    started = time.perf_counter()
    records = 0
    writer = JournalWriter(journal)
    with bar("predict", total, "rec") as shown:
        try:
            for rows in batches:
                writer.write(rows)
                records += len(rows)
                shown.update(len(rows))
            failed = writer.finish()
        except BaseException:
            writer.drain()
            journal.abandon()
            raise
    seconds = time.perf_counter() - started
    failed_in_output = journal.close(inputs)
    ok = records - failed
    return {
        "output": str(journal.out),
        "records": records,
        "ok": ok,
        "failed": failed,
        "resumed": resumed.value,
        "failed_in_output": failed_in_output,
        "seconds": round(seconds, 3),
        "records_per_s": round(records / seconds, 1) if seconds > 0 else None,
        "provider": provider,
    }


def _chunks(items: Iterator[Record], size: int) -> Iterator[list[Record]]:
    while chunk := list(islice(items, size)):
        yield chunk


def _decode_all(predictor: Predictor, records: list[Record]) -> list[tuple[Any, str | None]]:
    return [_decode(predictor, r) for r in records]


def _decode(predictor: Predictor, record: Record) -> tuple[Any, str | None]:
    if record.error is not None:
        return None, record.error
    try:
        return predictor.decode(record), None
    except AitkError as e:
        return None, str(e)
    except Exception as e:  # a corrupt input fails in a library's own way: it is still one record's error
        return None, f"{type(e).__name__}: {e}"


def _predict_decoded(predictor: Predictor, records: list[Record], decoded: list[tuple[Any, str | None]]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = [{"id": r.id, "error": error} for r, (_, error) in zip(records, decoded)]
    good = [i for i, (_, error) in enumerate(decoded) if error is None]
    for i, row in zip(good, _predict_isolating(predictor, [decoded[i][0] for i in good])):
        rows[i] = {"id": records[i].id, **row}
    return rows


def _predict_isolating(predictor: Predictor, inputs: list[Any]) -> list[dict[str, Any]]:
    """``predictor.predict`` on the batch; if it raises, record by record, so one bad input fails alone."""
    if not inputs:
        return []
    try:
        rows = predictor.predict(inputs)
        if len(rows) != len(inputs):
            raise AitkError(f"predictor returned {len(rows)} rows for {len(inputs)} inputs")
        return rows
    except Exception as e:
        if len(inputs) == 1:
            return [{"error": str(e) if isinstance(e, AitkError) else f"{type(e).__name__}: {e}"}]
        return [row for x in inputs for row in _predict_isolating(predictor, [x])]


def print_summary(summary: dict[str, Any]) -> None:
    """The run's summary as one log line (stderr; none with --quiet)."""
    logger.info(
        f"{summary['records']} records ({summary['ok']} ok, {summary['failed']} failed, {summary['resumed']} resumed) "
        f"in {summary['seconds']:.2f} s, {summary['records_per_s']} records/s on {summary['provider']} -> {summary['output']}"
    )
