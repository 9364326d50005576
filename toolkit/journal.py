"""The journal of a batch run: rows as JSON lines in ``OUT.partial.jsonl`` as each batch finishes
(``--resume`` keeps them; written by a thread of its own, ``JournalWriter``, through a buffer of
BUFFER_BYTES, flushed at least every FLUSH_SECONDS and when the run ends or stops), then OUT
written from it through a temp file and a rename; or, for OUT ``-``, each batch's rows on stdout
at once. A use case's ``layout`` applies as OUT is written."""

from __future__ import annotations

import json
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from itertools import repeat
from operator import contains
from pathlib import Path
from typing import Any

from applied_aitk.columns import PredictedBatch
from applied_aitk.console import get_logger
from applied_aitk.errors import AitkError
from applied_aitk.outputs import FORMATS, json_lines, read_jsonl, read_rows, write_jsonl, write_rows

logger = get_logger(__name__)
BUFFER_BYTES = 1 << 20
FLUSH_SECONDS = 1.0
Layout = Callable[[dict[str, Any]], list[dict[str, Any]]]
"""A record's row -> the rows written for it (an error row is passed through as it is)."""


class StdoutJournal:
    """``--out -``: each batch's rows as JSON lines on stdout as soon as it is done (no resume)."""

    out = "-"
    group = 1  # rows handed to the writing thread at a time (``JournalWriter``): each batch as it is done
    lays_out = True  # ``written`` applies the layout as rows go out

    def __init__(self, layout: Layout | None = None) -> None:
        self.ids: set[str] = set()
        self.failed = 0
        self.file = sys.stdout
        self.layout = layout

    def write(self, rows: list[dict[str, Any]] | PredictedBatch) -> int:
        """Append ``rows`` (or a ``PredictedBatch``, written from its columns) as JSON lines, the
        batch in one write; returns how many are error rows.

        A row holding NaN or an infinity anywhere is written as an error row naming the field:
        nothing non-finite reaches an output."""
        if isinstance(rows, PredictedBatch):
            if self.layout is None or not self.lays_out:
                data, bad = rows.json_lines()
                self.send(data)
                self.failed += bad
                return bad
            rows = rows.rows()
        data, rows = json_lines(rows)
        bad = sum(map(contains, rows, repeat("error")))  # rows with an error key, in one C loop
        if bad:
            bad = len(rows) - [row.get("error") for row in rows].count(None)
        self.send(self.written(data, rows))
        self.failed += bad
        return bad

    def send(self, data: bytes) -> None:
        """Write ``data`` and flush it: a reader of stdout gets each batch as it is done."""
        self.file.write(data.decode("utf-8") if self.file is sys.stdout else data)  # stdout takes text, the journal bytes
        self.file.flush()

    def written(self, text: bytes, rows: list[dict[str, Any]]) -> bytes:
        """What goes to the file for ``rows`` (their JSON lines ``text``): on stdout, laid out."""
        return text if self.layout is None else json_lines(list(laid_out(rows, self.layout)))[0]

    def abandon(self) -> None:
        pass

    def close(self, inputs: set[str] | None = None) -> int:
        return self.failed


class Journal(StdoutJournal):
    """Rows as JSON lines in ``OUT.partial.jsonl`` while the run goes; ``close()`` writes OUT from them."""

    group = 512
    lays_out = False  # the layout applies when OUT is written from the journal

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
        self.file = open(self.path, "ab", buffering=BUFFER_BYTES)
        self.flush_at = time.monotonic() + FLUSH_SECONDS

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

    def send(self, data: bytes) -> None:
        """Append ``data`` to the journal, flushed when FLUSH_SECONDS have passed since the last
        flush (a flush per batch of a fast model costs more than predicting it)."""
        self.file.write(data)
        if time.monotonic() >= self.flush_at:
            self.file.flush()
            self.flush_at = time.monotonic() + FLUSH_SECONDS

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


class JournalWriter:
    """Writes a journal's batches of rows in a thread of its own, in order: encoding rows as JSON
    lines and writing them overlaps predicting the next batch (ONNX Runtime and Arrow release the
    GIL), and on a loaded machine the writing has a thread's share of the cores. Batches go to the
    thread ``journal.group`` rows at a time, at most ``depth`` groups ahead. An error of the thread
    is raised by the next ``write`` or by ``finish``."""

    def __init__(self, journal: StdoutJournal, depth: int = 4) -> None:
        self.journal = journal
        self.group = journal.group
        self.pending: list[list[dict[str, Any]] | PredictedBatch] = []
        self.pending_rows = 0
        self.failed = 0
        self.error: BaseException | None = None
        self.queue: queue.Queue = queue.Queue(depth)
        self.thread = threading.Thread(target=self._run, name="aitk-writer", daemon=True)
        self.thread.start()

    def write(self, rows: list[dict[str, Any]] | PredictedBatch) -> None:
        if self.error is not None:
            raise self.error
        self.pending.append(rows)
        self.pending_rows += len(rows)
        if self.pending_rows >= self.group:
            self._send()

    def finish(self) -> int:
        """Write what is left and wait for the thread; returns the error rows written."""
        self._send()
        self.queue.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error
        return self.failed

    def drain(self) -> None:
        """The run stops: write the rows already predicted (for --resume), raising nothing."""
        try:
            self.finish()
        except BaseException:
            pass

    def _send(self) -> None:
        if self.pending:
            self.queue.put(self.pending)
            self.pending, self.pending_rows = [], 0

    def _run(self) -> None:
        while (batches := self.queue.get()) is not None:
            for rows in batches:
                if self.error is None:
                    try:
                        self.failed += self.journal.write(rows)
                    except BaseException as e:  # raised in the caller
                        self.error = e
