"""Evaluation in ONNX Runtime: perplexity on source files, pass@k on problems with tests (sandboxed)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from applied_aitk import AitkError
from applied_aitk.console import get_logger, progress
from applied_aitk.files import atomic_path
from applied_aitk.text import pad_ids

from applied_aitk.usecases.codegen.data import Problem
from applied_aitk.usecases.codegen.generate import Generator, Sampling
from applied_aitk.usecases.codegen.sandbox import describe, run_programs

logger = get_logger(__name__)


def token_losses(scorer, windows: list[np.ndarray], pad_id: int, batch_size: int = 8) -> np.ndarray:
    """Negative log-likelihood (nats, float64) of every token the windows predict, in stream order:
    ``[sum(len(w) - 1)]`` for windows cut by ``data.eval_windows`` (overlapping by one token, so token
    j + 1 of the stream is entry j). ``scorer``: an OrtSession of score.onnx."""
    order = sorted(range(len(windows)), key=lambda i: len(windows[i]))  # similar lengths together: little padding
    losses: list[np.ndarray] = [np.zeros(0)] * len(windows)
    for i in progress(range(0, len(order), batch_size), "perplexity", total=math.ceil(len(order) / batch_size), unit="batch"):
        chunk = order[i : i + batch_size]
        ids, mask = pad_ids([windows[k] for k in chunk], pad_id)
        (nll,) = scorer(ids, mask)
        for row, k in enumerate(chunk):
            losses[k] = np.asarray(nll[row, : len(windows[k]) - 1], np.float64)
    return np.concatenate(losses) if losses else np.zeros(0)


def perplexity(scorer, windows: list[np.ndarray], pad_id: int, batch_size: int = 8) -> dict[str, Any]:
    """Perplexity of the windows under the token-score graph (``scorer``: an OrtSession of score.onnx)."""
    return summarize(token_losses(scorer, windows, pad_id, batch_size))


def summarize(losses: np.ndarray) -> dict[str, Any]:
    """``perplexity``, ``loss`` (mean nats per token) and ``tokens`` of per-token losses; AitkError when there are none."""
    if not losses.size:
        raise AitkError("no tokens to score: the files are empty (perplexity needs at least two tokens in a file)")
    loss = float(losses.mean())
    return {"perplexity": math.exp(min(loss, 50)), "loss": loss, "tokens": int(losses.size)}


def per_file(losses: np.ndarray, lengths: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """``(tokens, loss)`` of each file, arrays [files]: ``losses`` from ``token_losses`` over the stream
    of files of ``lengths`` tokens, one after the other (token j + 1 of the stream is ``losses[j]``; a
    file's first token is predicted from the end of the file before it). A file with no token
    scored has loss nan."""
    owner = np.searchsorted(np.cumsum(lengths), np.arange(1, len(losses) + 1), side="right")
    tokens = np.bincount(owner, minlength=len(lengths))[: len(lengths)]
    sums = np.bincount(owner, weights=losses, minlength=len(lengths))[: len(lengths)]
    with np.errstate(invalid="ignore", divide="ignore"):
        return tokens, np.where(tokens > 0, sums / np.maximum(tokens, 1), np.nan)


def write_per_file(report: Path, names: list[str], tokens: np.ndarray, loss: np.ndarray, overall: float) -> None:
    """per_file.csv (tokens scored, loss and perplexity of each file, the hardest first) and
    perplexity_per_file.png: the perplexity of the hardest files (up to 25) beside the distribution
    over all files, with the overall perplexity marked."""
    import csv

    from applied_aitk.report import pyplot, save_figure

    scored = sorted((i for i in range(len(names)) if tokens[i]), key=lambda i: -loss[i])
    with atomic_path(report / "per_file.csv") as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "tokens", "loss", "perplexity"])
        writer.writerows([names[i], int(tokens[i]), round(float(loss[i]), 4), round(math.exp(min(float(loss[i]), 50)), 3)] for i in scored)
    perplexities = [math.exp(min(float(loss[i]), 50)) for i in scored]
    plt = pyplot()
    fig, (bars, spread) = plt.subplots(1, 2, figsize=(11, max(3.8, 0.22 * min(len(scored), 25) + 1)))
    shown = scored[:25][::-1]
    bars.barh([names[i] for i in shown], [math.exp(min(float(loss[i]), 50)) for i in shown])
    bars.axvline(overall, color="black", linestyle="--", label=f"all files: {overall:.4g}")
    bars.set(xlabel="perplexity", title=f"perplexity per file ({'hardest 25 of ' if len(scored) > 25 else ''}{len(scored)})")
    bars.tick_params(axis="y", labelsize=7)
    bars.legend()
    spread.hist(np.log10(perplexities), bins=min(30, max(5, len(scored))))
    spread.axvline(math.log10(overall), color="black", linestyle="--")
    spread.set(xlabel="log10 perplexity", ylabel="files", title="distribution over files")
    fig.tight_layout()
    save_figure(fig, report / "perplexity_per_file.png")


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k estimate from n samples of which c passed (Chen et al. 2021)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def evaluate_problems(generator: Generator, problems: list[Problem], sampling: Sampling, samples: int, ks: list[int],
                      timeout: float, memory_mb: int, batch_size: int = 8, report: Path | None = None,
                      unsafe: bool = False) -> dict[str, Any]:
    """Generate ``samples`` completions per problem, run each with its tests in the sandbox, score pass@k.

    ``unsafe``: where the sandbox is unavailable run the programs unisolated instead of refusing
    (AitkError); ``sandbox`` in the metrics names the isolation really used."""
    jobs = [(p, s) for p in problems for s in range(samples)]
    jobs.sort(key=lambda job: len(job[0].prompt))
    started = time.perf_counter()
    completions, new_tokens = [], 0
    for i in progress(range(0, len(jobs), batch_size), "generate", total=math.ceil(len(jobs) / batch_size), unit="batch"):
        chunk = jobs[i : i + batch_size]
        for stop in dict.fromkeys(p.stop for p, _ in chunk):
            part = [(p, s) for p, s in chunk if p.stop == stop]
            sampling.stop = stop
            done = generator.complete([p.prompt for p, _ in part], sampling, seeds=[_seed(p.task_id, s) for p, s in part],
                                      where=[f"task {p.task_id}" for p, _ in part])
            completions += [(p, s, c) for (p, s), c in zip(part, done)]
            new_tokens += sum(len(c.tokens) for c in done)
    generate_s = time.perf_counter() - started
    isolation = describe(timeout, memory_mb, unsafe=unsafe)
    logger.info(f"generated {len(completions)} completions ({new_tokens} tokens) in {generate_s:.1f} s; running their tests in {isolation}")
    results = run_programs([p.program(c.text) for p, _, c in completions], timeout=timeout, memory_mb=memory_mb, unsafe=unsafe)
    passed: dict[str, int] = {p.task_id: 0 for p in problems}
    for (p, _, _), result in zip(completions, results):
        passed[p.task_id] += result["status"] == "passed"
    statuses = [r["status"] for r in results]
    metrics: dict[str, Any] = {f"pass@{k}": float(np.mean([pass_at_k(samples, c, k) for c in passed.values()])) for k in ks if k <= samples}
    metrics.update({
        "problems": len(problems),
        "samples_per_problem": samples,
        "problems_solved": sum(c > 0 for c in passed.values()),
        "timeouts": statuses.count("timeout"),
        "memory_errors": statuses.count("memory"),
        "generate_tokens_per_s": round(new_tokens / generate_s, 1) if generate_s else None,
        "sandbox": isolation,
    })
    if report:
        _write_report(report / "completions.jsonl", completions, results)
        _write_per_problem(report, passed, samples, [k for k in ks if k <= samples])
    return metrics


def _write_per_problem(report: Path, passed: dict[str, int], samples: int, ks: list[int]) -> None:
    """per_problem.csv (passing samples and pass@k of each problem) and pass_at_k.png: how many
    problems had 0, 1, ... ``samples`` passing samples, with pass@k per problem sorted."""
    import csv

    from applied_aitk.report import pyplot, save_figure

    with atomic_path(report / "per_problem.csv") as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["task_id", "samples", "passed", *(f"pass@{k}" for k in ks)])
        for task, c in sorted(passed.items(), key=lambda item: -item[1]):
            writer.writerow([task, samples, c, *(round(pass_at_k(samples, c, k), 4) for k in ks)])
    plt = pyplot()
    fig, (hist, curve) = plt.subplots(1, 2, figsize=(10, 3.8))
    counts = np.bincount(list(passed.values()), minlength=samples + 1)
    hist.bar(range(samples + 1), counts)
    hist.set(xlabel=f"passing samples (of {samples})", ylabel="problems", title=f"{len(passed)} problems")
    for k in ks:
        curve.plot(sorted((pass_at_k(samples, c, k) for c in passed.values()), reverse=True), label=f"pass@{k}")
    curve.set(xlabel="problem (sorted)", ylabel="pass@k", ylim=(-0.02, 1.02), title="pass@k per problem")
    curve.legend()
    fig.tight_layout()
    save_figure(fig, report / "pass_at_k.png")


def _seed(task_id: str, sample: int) -> int:
    import zlib

    return zlib.crc32(f"{task_id}:{sample}".encode())


def _write_report(path: Path, completions, results) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for (problem, sample, completion), result in zip(completions, results):
            row = {"task_id": problem.task_id, "sample": sample, "completion": completion.text, "finish_reason": completion.finish_reason,
                   "status": result["status"], "seconds": result["seconds"], "stderr": result["stderr"][-300:]}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
