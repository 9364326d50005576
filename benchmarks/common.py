"""Benchmark helpers: a trained bundle of any installed use case on its sample data, inputs scaled up."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def trained_usecase(name: str, work: Path, variants: list[str] | tuple[str, ...] = ()):
    """(usecase, bundle, sample) for an installed use case, trained on its own sample data (with
    the model ``variants``, e.g. int8, beside fp32)."""
    from applied_aitk.bundle import load_bundle
    from applied_aitk.package import train_bundle
    from applied_aitk.plugins import get_usecases
    from applied_aitk.runtime import Runtime

    usecase = get_usecases()[name]
    sample = usecase.sample(work / "sample")
    bundle = train_bundle(usecase, sample.train, work / "bundle", usecase.config_from(sample.settings), Runtime(device="cpu"), variants)
    return usecase, load_bundle(bundle.path, usecase=name), sample


def replicate_inputs(usecase, predictor, sample, out: Path, records: int) -> list[Path]:
    """The sample's predict files repeated to hold at least ``records`` records: CSV and JSONL
    files grow by repeating their rows (one big file, as tables usually come), others are copied."""
    from applied_aitk.batch import expand_inputs

    files = expand_inputs([str(p) for p in sample.predict], usecase.input_suffixes)
    rounds = -(-records // sum(1 for _ in predictor.read(files)))
    out.mkdir(parents=True, exist_ok=True)
    copies = []
    for f in files:
        if f.suffix in (".csv", ".jsonl"):
            lines = f.read_text().splitlines()
            header = lines[:1] if f.suffix == ".csv" else []
            copies.append(out / f.name)
            copies[-1].write_text("\n".join(header + lines[len(header):] * rounds) + "\n")
        else:
            for i in range(rounds):
                copies.append(out / f"{i:05d}-{f.name}")
                shutil.copyfile(f, copies[-1])
    return copies


def command_seconds(args: list[str], rounds: int = 7) -> float:
    """Median wall time of a command, after one warm-up run, with bytecode caches written and read
    as on an installed copy (PYTHONDONTWRITEBYTECODE in the caller's environment would make every
    run compile its modules from source)."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run(args, capture_output=True, check=True, env=env)
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        subprocess.run(args, capture_output=True, check=True, env=env)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


PYTHON = sys.executable
