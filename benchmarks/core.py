"""Core overheads: `aitk --help` beside `python -c pass`, and batch predict over files beside the
same predictor called in memory on the same records (for a predictor with the batch path, table
rows: its RecordBatches held in memory, predicted in slices of --batch-size, rows made with ids;
the same predictor is also measured record by record, the path it had before, in the same run; a
predictor with ``predict_columns`` gives columns in memory, and JSON lines made from them over files).

Like with like: the in-memory peer makes every row as the files path does and drops each batch's
rows once made (the files path drops them once journalled), under the same garbage-collector
setting as `run_batch` (``gc.freeze()``); holding all rows would make the collector walk them and
slow the peer. Both are timed around the whole call (wall clock), and their CPU time (process
time, all threads) per record is given too: on a machine shared with other jobs the wall-clock
ratio also measures how much CPU the files path's extra threads take from those jobs.

    python benchmarks/core.py [--usecase wine] [--records 50000] [--batch-size 64] [--rounds 3]
"""

from __future__ import annotations

import argparse
import copy
import gc
import os
import tempfile
import time
from functools import partial
from pathlib import Path

from common import PYTHON, command_seconds, markdown_table, replicate_inputs, trained_usecase


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--usecase", default="wine", help="an installed use case (its sample data is used)")
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="measurements of each, alternated; the best counts")
    args = parser.parse_args()

    from applied_aitk.batch import reads_batches, run_batch
    from applied_aitk.runtime import Runtime

    bare = command_seconds([PYTHON, "-c", "pass"])
    aitk_help = command_seconds([PYTHON, "-c", "from applied_aitk.cli import main; main()", "--help"])
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        usecase, bundle, sample = trained_usecase(args.usecase, work)
        predictor = usecase.load(bundle, Runtime(device="cpu").sleeping())  # as `aitk predict` runs it, for both paths
        files = replicate_inputs(usecase, predictor, sample, work / "inputs", args.records)
        paths = {"batch": predictor, "record": by_record(predictor)} if reads_batches(predictor) else {"record": predictor}
        peers = {name: in_memory_peer(p, files, args.batch_size) for name, p in paths.items()}
        in_memory, over_files = dict.fromkeys(paths, 0.0), dict.fromkeys(paths, 0.0)  # records/s, best
        cpu_memory, cpu_files = dict.fromkeys(paths, float("inf")), dict.fromkeys(paths, float("inf"))  # CPU us/record, best
        loads = []
        for _ in range(args.rounds):  # alternated, best of each: other jobs on the machine slow either at random
            for name, p in paths.items():
                count, run = peers[name]
                seconds, cpu = timed(run)
                in_memory[name], cpu_memory[name] = max(in_memory[name], count / seconds), min(cpu_memory[name], cpu / count * 1e6)
                seconds, cpu = timed(lambda: run_batch(p, files, work / "out.jsonl", batch_size=args.batch_size))
                over_files[name], cpu_files[name] = max(over_files[name], count / seconds), min(cpu_files[name], cpu / count * 1e6)
            loads.append(os.getloadavg()[0])
    print(f"cores: {os.cpu_count()}, use case: {args.usecase}, {count} records in {len(files)} files, batch {args.batch_size}, "
          f"load average {min(loads):.1f}-{max(loads):.1f}\n")
    label = {"batch": "predict over files (records/s)", "record": "predict over files (records/s)"}
    cpu_label = {"batch": "predict over files", "record": "predict over files"}
    if len(paths) == 2:
        label = {"batch": "predict over files, batch path (records/s)", "record": "the same, record by record (records/s)"}
        cpu_label = {"batch": "batch path", "record": "record by record"}
    print(markdown_table(["measure", "value", "peer", "ratio", "goal"], [
        ["`aitk --help` (s)", f"{aitk_help:.3f}", f"`python -c pass` {bare:.3f}", f"+{aitk_help - bare:.3f} s", "< 0.3 s"],
        *[[label[name], f"{over_files[name]:,.0f}", f"in memory {in_memory[name]:,.0f}", f"{over_files[name] / in_memory[name]:.2f}",
           ">= 0.8" if name == next(iter(paths)) else ""] for name in paths],
        *[[f"{cpu_label[name]}, CPU time (us/record)", f"{cpu_files[name]:.2f}", f"in memory {cpu_memory[name]:.2f}",
           f"{cpu_memory[name] / cpu_files[name]:.2f}", ""] for name in paths],
    ]))


def timed(run) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the process, all threads) of ``run()``."""
    cpu, started = time.process_time(), time.perf_counter()
    run()
    return time.perf_counter() - started, time.process_time() - cpu


def by_record(predictor):
    """``predictor`` without its batch path: batch inference reads and predicts it record by record."""
    from applied_aitk.usecase import Predictor

    plain = copy.copy(predictor)
    plain.__class__ = type(f"{type(predictor).__name__}ByRecord", (type(predictor),), {"read_batches": Predictor.read_batches})
    return plain


def in_memory_peer(predictor, files: list[Path], batch_size: int):
    """(records, a function predicting them all from memory, in calls of ``batch_size``, rows with ids,
    each call's rows dropped once made, under ``gc.freeze()`` as ``run_batch`` runs): for the batch
    path its RecordBatches (output as the predicting thread of ``run_batch`` hands it to the writer:
    rows, or for ``predict_columns`` the columns with ids), else its Records."""
    from applied_aitk.batch import batch_output, predict_records, reads_batches, slices

    if reads_batches(predictor):
        batches = list(predictor.read_batches(files))
        calls = [partial(batch_output, predictor, part) for b in batches for part in slices(b, batch_size)]
        count = sum(len(b.ids) for b in batches)
    else:
        records = list(predictor.read(files))
        calls = [partial(predict_records, predictor, records[i : i + batch_size]) for i in range(0, len(records), batch_size)]
        count = len(records)

    def run() -> None:
        gc.freeze()
        try:
            for call in calls:
                call()
        finally:
            gc.unfreeze()

    return count, run

if __name__ == "__main__":
    main()
