"""Local engine vs Ray engine records/s on the same inputs, and how Ray grows with actors.

    python benchmarks/scale.py [--usecase wine] [--records 20000] [--actors 1 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from common import markdown_table, replicate_inputs, trained_usecase


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--usecase", default="wine")
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--actors", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()

    from applied_aitk.batch import run_batch
    from applied_aitk.ray_engine import run_batch_ray
    from applied_aitk.runtime import Runtime

    runtime = Runtime(device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        usecase, bundle, sample = trained_usecase(args.usecase, work)
        predictor = usecase.load(bundle, runtime)
        files = replicate_inputs(usecase, predictor, sample, work / "inputs", args.records)
        local = run_batch(predictor, files, work / "local.jsonl", batch_size=args.batch_size)
        rows = [["local (threads)", local["records"], f"{local['records_per_s']:,.0f}", "1.00"]]
        for actors in args.actors:
            ray = run_batch_ray(args.usecase, bundle.path, runtime, {}, files, work / f"ray{actors}.jsonl", args.batch_size, actors=actors)
            same = (work / f"ray{actors}.jsonl").read_bytes() == (work / "local.jsonl").read_bytes()
            rows.append([f"ray, {actors} actors{'' if same else ' (ROWS DIFFER)'}", ray["records"], f"{ray['records_per_s']:,.0f}", f"{ray['records_per_s'] / local['records_per_s']:.2f}"])
    print(f"cores: {os.cpu_count()}, use case: {args.usecase}, {local['records']} records in {len(files)} files, batch {args.batch_size}; Ray's time includes starting its workers\n")
    print(markdown_table(["engine", "records", "records/s", "vs local"], rows))


if __name__ == "__main__":
    main()
