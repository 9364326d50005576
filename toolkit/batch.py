"""Batch inference over files: expand inputs, stream records, decode in threads, write rows.

Rows go to a journal (``OUT.partial.jsonl``) as each batch finishes; when the run ends the
journal becomes ``OUT`` (JSONL, CSV or Parquet by its extension) through a temp file and a
rename, so OUT is never half-written. ``--resume`` keeps the rows of the journal (or of a
finished OUT) and skips their records. A bad record becomes a row with an ``error`` field.
OUT ``-`` writes the rows to stdout as JSON lines, each batch as it finishes. A use case's
``layout`` (``UseCase.layout``) may write a record's row as several rows; it applies as OUT is
written, so the journal and ``--resume`` keep one row per record."""

from __future__ import annotations

import dataclasses
import gc
import glob
import json
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from applied_aitk.console import bar, get_logger
from applied_aitk.errors import AitkError
from applied_aitk.io import has_suffix
from applied_aitk.outputs import FORMATS, json_lines, read_jsonl, read_rows, write_jsonl, write_rows
from applied_aitk.usecase import Predictor, Record

logger = get_logger(__name__)
Layout = Callable[[dict[str, Any]], list[dict[str, Any]]]
"""A record's row -> the rows written for it (an error row is passed through as it is)."""


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
    batches ahead of the model (inline when ``predictor.threaded_decode`` is False)."""
    journal = StdoutJournal(layout) if str(out) == "-" else Journal(out, resume, layout)
    resumed, inputs = Counter(), set()
    records = skip_done(predictor.read(paths), journal.ids, resumed, batch_size, inputs)

    decoders = workers or min(8, os.cpu_count() or 1)

    def batches() -> Iterator[list[dict[str, Any]]]:
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
    gc.freeze()  # during the run, full collections skip what lives now (modules, the model)
    try:
        return write_batches(batches(), journal, resumed, getattr(predictor, "provider", None), remaining, inputs)
    finally:
        gc.unfreeze()


@dataclass
class Counter:
    value: int = 0


def skip_done(records: Iterable[Record], done: set[str], skipped: Counter, size: int = 64,
              read_ids: set[str] | None = None) -> Iterator[Record]:
    """The records whose ids are not in ``done``, counting the others in ``skipped``; every id
    read (skipped or not) is added to ``read_ids`` when given.

    An id seen before in this run (two records given the same id) is made unique, the same way
    in every run: the second is ``ID#2``, the third ``ID#3``; one warning line names the first.
    Records are taken ``size`` at a time and checked with set operations; one by one only in a
    chunk that repeats an id."""
    seen: dict[str, int] = {}
    warned = False
    for chunk in _chunks(iter(records), size):
        ids = [record.id for record in chunk]
        fresh = set(ids)
        if len(fresh) == len(ids) and seen.keys().isdisjoint(fresh):
            seen.update(dict.fromkeys(ids, 1))
        else:
            chunk, repeated = _made_unique(chunk, seen)
            if repeated is not None and not warned:
                logger.warning(f"record id {repeated!r} appears more than once; later ones get #2, #3, ...")
                warned = True
        if read_ids is not None:
            read_ids.update(record.id for record in chunk)
        if done:
            kept = [record for record in chunk if record.id not in done]
            skipped.value += len(chunk) - len(kept)
            chunk = kept
        yield from chunk


def _made_unique(chunk: list[Record], seen: dict[str, int]) -> tuple[list[Record], str | None]:
    """``chunk`` with each id seen before renamed ID#N (N: its count so far); the first such id."""
    unique, repeated = [], None
    for record in chunk:
        copies = seen[record.id] = seen.get(record.id, 0) + 1
        if copies > 1:
            repeated = repeated or record.id
            record = dataclasses.replace(record, id=f"{record.id}#{copies}")
            seen[record.id] = seen.get(record.id, 0) + 1
        unique.append(record)
    return unique, repeated


def write_batches(batches: Iterable[list[dict[str, Any]]], journal: Journal, resumed: Counter, provider: str | None,
                  total: int | None = None, inputs: set[str] | None = None) -> dict[str, Any]:
    """Journal each batch of rows as it comes, then write the output; returns the run's summary.
    ``total`` (records to predict, when known) gives the progress bar its length and ETA; ``inputs``,
    the ids of every record read, lets a resumed run leave out rows of records no longer given."""
    started = time.perf_counter()
    ok = failed = 0
    with bar("predict", total, "rec") as shown:
        try:
            for rows in batches:
                bad = journal.write(rows)
                ok, failed = ok + len(rows) - bad, failed + bad
                shown.update(len(rows))
        except BaseException:
            journal.abandon()
            raise
    seconds = time.perf_counter() - started
    failed_in_output = journal.close(inputs)
    return {
        "output": str(journal.out),
        "records": ok + failed,
        "ok": ok,
        "failed": failed,
        "resumed": resumed.value,
        "failed_in_output": failed_in_output,
        "seconds": round(seconds, 3),
        "records_per_s": round((ok + failed) / seconds, 1) if seconds > 0 else None,
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


class StdoutJournal:
    """``--out -``: each batch's rows as JSON lines on stdout as soon as it is done (no resume)."""

    out = "-"

    def __init__(self, layout: Layout | None = None) -> None:
        self.ids: set[str] = set()
        self.failed = 0
        self.file = sys.stdout
        self.layout = layout

    def write(self, rows: list[dict[str, Any]]) -> int:
        """Append ``rows`` as JSON lines, the batch in one write; returns how many are error rows.

        A row holding NaN or an infinity anywhere is written as an error row naming the field:
        nothing non-finite reaches an output."""
        data, rows = json_lines(rows)
        data = self.written(data, rows)
        self.file.write(data.decode("utf-8") if self.file is sys.stdout else data)  # stdout takes text, the journal bytes
        self.file.flush()
        bad = sum(1 for row in rows if row.get("error") is not None)
        self.failed += bad
        return bad

    def written(self, text: bytes, rows: list[dict[str, Any]]) -> bytes:
        """What goes to the file for ``rows`` (their JSON lines ``text``): on stdout, laid out."""
        return text if self.layout is None else json_lines(list(laid_out(rows, self.layout)))[0]

    def abandon(self) -> None:
        pass

    def close(self, inputs: set[str] | None = None) -> int:
        return self.failed


class Journal(StdoutJournal):
    """Rows as JSON lines in ``OUT.partial.jsonl`` while the run goes; ``close()`` writes OUT from them."""

    def __init__(self, out: Path, resume: bool, layout: Layout | None = None):
        out = Path(out)
        if out.suffix.lower() not in FORMATS:
            raise AitkError(f"--out {out}: expected a file ending in {', '.join(FORMATS)}")
        self.out = out
        self.path = out.with_name(out.name + ".partial.jsonl")
        self.ids: set[str] = set()
        self.error_ids: set[str] = set()
        self.failed = 0
        self.layout = layout
        out.parent.mkdir(parents=True, exist_ok=True)
        if resume and not self.path.exists() and out.exists():
            write_jsonl(read_rows(out), self.path)
        if resume and self.path.exists():
            self._keep_complete_lines()
        else:
            self.path.write_text("")
        self.file = open(self.path, "ab")

    def _keep_complete_lines(self) -> None:
        """Drop a last line cut short by a kill; remember the ids already done."""
        data = self.path.read_bytes()
        data = data[: data.rfind(b"\n") + 1]
        with open(self.path, "wb") as f:
            f.write(data)
        for line in data.splitlines():
            if line.strip():
                row = json.loads(line)
                self.ids.add(row["id"])
                if row.get("error") is not None:
                    self.error_ids.add(row["id"])
        self.failed = len(self.error_ids)

    def written(self, text: bytes, rows: list[dict[str, Any]]) -> bytes:
        """One row per record in the journal, for --resume: the layout applies when OUT is written."""
        return text

    def abandon(self) -> None:
        """The run failed: keep the journal for --resume, unless it holds no rows at all."""
        self.file.close()
        if self.path.stat().st_size == 0:
            self.path.unlink()

    def close(self, inputs: set[str] | None = None) -> int:
        """Write OUT from the journal (temp file + rename), remove the journal; returns error rows in OUT.

        Rows kept by --resume for records not among ``inputs`` (the ids of every record this run
        read; None: keep all) are left out with a warning, so OUT holds exactly this run's records."""
        self.file.close()
        stale = self.ids - inputs if inputs is not None else set()
        if stale:
            logger.warning(f"--resume: {len(stale)} row(s) in {self.out.name} are for records not in these inputs "
                           f"(first: {min(stale)!r}); they are left out")
            self.failed -= len(stale & self.error_ids)
        if self.out.suffix.lower() == ".jsonl" and self.layout is None and not stale:
            os.replace(self.path, self.out)
        else:
            layout = self.layout

            def rows() -> Iterator[dict[str, Any]]:
                kept = (row for row in read_jsonl(self.path) if row["id"] not in stale)
                return kept if layout is None else laid_out(kept, layout)

            write_rows(rows, self.out)
            self.path.unlink()
        return self.failed


def laid_out(rows: Iterable[dict[str, Any]], layout: Layout) -> Iterator[dict[str, Any]]:
    """The rows written for ``rows``: error rows as they are, the others through ``layout``."""
    for row in rows:
        if row.get("error") is not None:
            yield row
        else:
            yield from layout(row)


def print_summary(summary: dict[str, Any]) -> None:
    """The run's summary as one log line (stderr; none with --quiet)."""
    logger.info(
        f"{summary['records']} records ({summary['ok']} ok, {summary['failed']} failed, {summary['resumed']} resumed) "
        f"in {summary['seconds']:.2f} s, {summary['records_per_s']} records/s on {summary['provider']} -> {summary['output']}"
    )
