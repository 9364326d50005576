"""Core overheads: `aitk --help` beside `python -c pass`, and batch predict over files beside the
same predictor called in memory on the same records (for a predictor with the batch path, table
rows: its RecordBatches held in memory, predicted in slices of --batch-size, rows made with ids).

    python benchmarks/core.py [--usecase wine] [--records 50000] [--batch-size 64] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from common import PYTHON, command_seconds, markdown_table, replicate_inputs, trained_usecase


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--usecase", default="wine", help="an installed use case (its sample data is used)")
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="measurements of each, alternated; the best counts")
    args = parser.parse_args()

    from applied_aitk.batch import batch_rows, predict_records, reads_batches, run_batch, slices
    from applied_aitk.runtime import Runtime

    bare = command_seconds([PYTHON, "-c", "pass"])
    aitk_help = command_seconds([PYTHON, "-c", "from applied_aitk.cli import main; main()", "--help"])
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        usecase, bundle, sample = trained_usecase(args.usecase, work)
        predictor = usecase.load(bundle, Runtime(device="cpu"))
        files = replicate_inputs(usecase, predictor, sample, work / "inputs", args.records)
        if reads_batches(predictor):  # the batch path: the records as the column batches it predicts
            batches = list(predictor.read_batches(files))
            count = sum(len(batch.ids) for batch in batches)

            def in_memory_rows() -> None:
                for batch in batches:
                    for part in slices(batch, args.batch_size):
                        batch_rows(predictor, part)
        else:
            records = list(predictor.read(files))
            count = len(records)

            def in_memory_rows() -> None:
                for i in range(0, len(records), args.batch_size):
                    predict_records(predictor, records[i : i + args.batch_size])

        in_memory = over_files = 0.0
        for _ in range(args.rounds):  # alternated, best of each: other jobs on the machine slow either at random
            started = time.perf_counter()
            in_memory_rows()
            in_memory = max(in_memory, count / (time.perf_counter() - started))
            summary = run_batch(predictor, files, work / "out.jsonl", batch_size=args.batch_size)
            over_files = max(over_files, summary["records"] / summary["seconds"])
    print(f"cores: {os.cpu_count()}, use case: {args.usecase}, {count} records in {len(files)} files, batch {args.batch_size}\n")
    print(markdown_table(["measure", "value", "peer", "ratio", "goal"], [
        ["`aitk --help` (s)", f"{aitk_help:.3f}", f"`python -c pass` {bare:.3f}", f"+{aitk_help - bare:.3f} s", "< 0.3 s"],
        ["predict over files (records/s)", f"{over_files:,.0f}", f"in memory {in_memory:,.0f}", f"{over_files / in_memory:.2f}", ">= 0.8"],
    ]))


if __name__ == "__main__":
    main()
