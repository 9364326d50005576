"""Sandbox benchmark: programs per second through the codegen sandbox's ``run_programs`` on the
canonical solutions of the codegen sample problems (each must pass), one at a time and one per core
at once: the sandbox's own cost per program, not the model's. ``--before REV`` also times the
sandbox of an earlier commit, rounds interleaved with the current one so both see the same load.

    .venv/bin/python benchmarks/sandbox.py [--programs 100] [--rounds 3] [--before 8f84f94]

Prints the isolation used and a markdown table (medians of ``--rounds`` rounds)."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time
import types
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def sample_programs() -> list[str]:
    """The sample problems' canonical programs (prompt + reference solution + tests)."""
    from applied_aitk.usecases.codegen.data import read_problems

    path = REPO / "plugins/codegen/sample_data/eval/problems.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [p.program("\n" + line["code"] if "code" in line else line["canonical_solution"])
            for line, p in zip(lines, read_problems(path))]


def sandbox_at(revision: str) -> types.ModuleType:
    """``plugins/codegen/sandbox.py`` as it was at a git revision, as a module."""
    shown = subprocess.run(["git", "-C", str(REPO), "show", f"{revision}:plugins/codegen/sandbox.py"],
                           capture_output=True, text=True, check=True)
    module = types.ModuleType(f"sandbox_{revision}")
    exec(compile(shown.stdout, f"{revision}:plugins/codegen/sandbox.py", "exec"), module.__dict__)
    return module


def programs_per_second(module, sources: list[str], workers: int) -> float:
    started = time.perf_counter()
    results = module.run_programs(sources, timeout=5.0, memory_mb=512, workers=workers)
    seconds = time.perf_counter() - started
    failed = [r for r in results if r["status"] != "passed"]
    if failed:
        raise SystemExit(f"{len(failed)} canonical programs did not pass, e.g. {failed[0]}")
    return len(sources) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--programs", type=int, default=100, help="programs per round (the sample programs repeated)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per variant and mode (median)")
    parser.add_argument("--before", default=None, help="also time the sandbox of this git revision")
    args = parser.parse_args()
    from applied_aitk.usecases.codegen import sandbox

    variants = {"current": sandbox}
    if args.before:
        variants = {f"before ({args.before})": sandbox_at(args.before), **variants}
    programs = sample_programs()
    sources = (programs * -(-args.programs // len(programs)))[: args.programs]
    cores = os.cpu_count() or 1
    modes = {"1 at a time": 1, f"{cores} at once": cores}
    rates: dict[tuple[str, str], list[float]] = {(v, m): [] for v in variants for m in modes}
    for module in variants.values():
        programs_per_second(module, sources[:8], cores)  # warm-up (and the isolation probe)
    for _ in range(args.rounds):
        for variant, module in variants.items():
            for mode, workers in modes.items():
                rates[variant, mode].append(programs_per_second(module, sources, workers))
    print(f"isolation now: {sandbox.describe()}")
    print(f"{args.programs} programs a round, {args.rounds} rounds, {cores} cores, load average {os.getloadavg()[0]:.1f} at the end\n")
    print("| sandbox | " + " | ".join(f"{m}: programs/s" for m in modes) + " |\n|---|" + "---|" * len(modes))
    for variant in variants:
        print(f"| {variant} | " + " | ".join(f"{statistics.median(rates[variant, m]):.1f}" for m in modes) + " |")


if __name__ == "__main__":
    main()
