"""The GPU path checked in one command, for a machine with CUDA and onnxruntime-gpu.

    PYTHONPATH=<onnxruntime-gpu target>:. python benchmarks/gpu_check.py [--out DIR] [--budget SECONDS] [--only NAME,...]
    python benchmarks/gpu_check.py --device cpu      # the same pipeline on the CPU provider: a self-test

Prints the GPU, driver, CUDA, cuDNN, torch and ONNX Runtime versions; then, for every installed use
case (found like `aitk demo` finds them): writes its sample data, trains a small model on CUDA (the
sample's settings with fewer steps) and ``--quantize fp16``, runs ``evaluate`` and ``predict`` through the aitk CLI with
``--device cuda`` and ``--device cpu``, fp32 and fp16, and asserts that every ONNX Runtime session
of a CUDA run got CUDAExecutionProvider, that torch trained on the GPU, and that the CUDA outputs
match the CPU outputs on identical inputs within the export's parity tolerance (fp32: the bundle's
atol; fp16: FP16_ATOL + FP16_RTOL x the output's scale); then times defects images/s and codegen
tokens/s, ORT fp32 and fp16 (IO binding on) beside torch on the same device. Writes gpu-check.md
(one markdown table), gpu-check.json and log.txt (every step's stderr) to --out.

Each step runs in its own process with a time limit; the use cases share --budget (default 340 s);
a failing step is a failed row and the check goes on. Exit codes: 0 every check passed; 1 a check
failed or did not run within the budget; 2 a usage error; 4 CUDA cannot be used here, said in one
line (no NVIDIA driver, no CUDA provider in onnxruntime, or torch without CUDA) before anything
heavy is imported. See benchmarks/README.md for getting onnxruntime-gpu onto a machine without network."""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
NO_CUDA = 4
CUDA, CPU = "CUDAExecutionProvider", "CPUExecutionProvider"
STEP_LIMITS = {"train": 150, "run": 60, "speed": 120}
"""Seconds each kind of step may take at the default budget (they scale with --budget)."""
DEFAULT_BUDGET = 340


def cuda_missing() -> str | None:
    """None when CUDA can be used, else what is missing, checked cheapest first."""
    if not (Path("/proc/driver/nvidia/version").exists() or Path("/dev/nvidia0").exists()):
        return "no NVIDIA GPU or driver here (neither /proc/driver/nvidia/version nor /dev/nvidia0 exists)"
    try:
        import onnxruntime as ort
    except ImportError as e:
        return f"onnxruntime cannot be imported ({e}); install onnxruntime-gpu (benchmarks/README.md)"
    if CUDA not in ort.get_available_providers():
        return f"onnxruntime {ort.__version__} from {Path(ort.__file__).parent} has no {CUDA}; put onnxruntime-gpu first on PYTHONPATH (benchmarks/README.md)"
    try:
        import torch
    except ImportError as e:
        return f"torch cannot be imported ({e})"
    if not torch.cuda.is_available():
        return f"torch {torch.__version__} sees no CUDA device (built for CUDA {torch.version.cuda})"
    return None


def machine(device: str) -> dict[str, Any]:
    import onnxruntime as ort
    import torch

    info: dict[str, Any] = {"python": platform.python_version(), "cpu cores": os.cpu_count()}
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info |= {"gpu": f"{props.name}, {props.total_memory / 2**30:.0f} GiB", "driver": _driver(),
                 "cuda (torch)": torch.version.cuda, "cudnn (torch)": torch.backends.cudnn.version()}
    return info | {"torch": torch.__version__, "onnxruntime": f"{ort.__version__} ({Path(ort.__file__).parent})",
                   "onnxruntime providers": ", ".join(ort.get_available_providers())}


def _driver() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True, timeout=30).stdout
        if out.strip():
            return out.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError):
        pass
    version = Path("/proc/driver/nvidia/version")
    return version.read_text().splitlines()[0] if version.exists() else "unknown"


def missing_packages() -> str:
    """pyproject.toml's dependencies that are not installed here (by distribution name), or 'none'."""
    import re
    import tomllib
    from importlib.metadata import PackageNotFoundError, version

    missing = []
    for requirement in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]:
        name = re.match(r"[A-Za-z0-9_.-]+", requirement).group(0)
        try:
            version(name)
        except PackageNotFoundError:
            missing.append(name)
    return ", ".join(missing) or "none"


def provider_probe(device: str) -> str:
    """The provider a one-node ONNX model's session gets through aitk's runtime (raises when CUDA does not start)."""
    from onnx import TensorProto, helper

    from applied_aitk.runtime import Runtime

    x, y = (helper.make_tensor_value_info(n, TensorProto.FLOAT, [None]) for n in "xy")
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe", [x], [y]), opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return Runtime(device=device).session(model.SerializeToString()).provider


def register_plugins(work: Path) -> str:
    """Make aitk importable and the built-in plugins discoverable where aitk is not installed (a bare
    working tree): under WORK/entry-points, the package as installed (``applied_aitk``: links to
    toolkit/'s files, and ``applied_aitk.usecases``: plugins/) and a dist-info folder declaring
    pyproject.toml's "aitk" entry points, first on the path of this process and of every step (where
    aitk is installed too, aitk skips the second entry of a name). Returns the plugins it declares."""
    import shutil
    import tomllib

    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]["aitk"]
    dist = work / "entry-points" / "aitk_worktree-0.dist-info"
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: aitk-worktree\nVersion: 0\n")
    (dist / "entry_points.txt").write_text("[aitk]\n" + "".join(f"{k} = {v}\n" for k, v in declared.items()))
    package = dist.parent / "applied_aitk"
    shutil.rmtree(package, ignore_errors=True)
    package.mkdir()
    for entry in (REPO / "toolkit").iterdir():
        (package / entry.name).symlink_to(entry)
    (package / "usecases").symlink_to(REPO / "plugins")
    paths = [str(dist.parent)]
    sys.path[:0] = paths
    os.environ["PYTHONPATH"] = os.pathsep.join([*paths, *filter(None, [os.environ.get("PYTHONPATH")])])
    return ", ".join(declared)


class Check:
    """Runs the steps within the budget and collects one row per step."""

    def __init__(self, args: argparse.Namespace):
        self.args, self.rows = args, []
        self.deadline = time.monotonic() + args.budget
        self.scale = args.budget / DEFAULT_BUDGET
        self.log = open(args.out / "log.txt", "w")
        self.lock, self.local = threading.Lock(), threading.local()  # the CPU reference runs beside the device's

    def row(self, usecase: str, step: str, device: str, precision: str, status: str, seconds: float, result: str, **details: Any) -> dict:
        row = {"usecase": usecase, "step": step, "device": device, "precision": precision, "status": status,
               "seconds": round(seconds, 1), "result": result, **details}
        self.rows.append(row)
        print(f"[{time.strftime('%H:%M:%S')}] {usecase} {step} {device} {precision}: {status} ({seconds:.1f} s) {result}", file=sys.stderr, flush=True)
        return row

    def limit(self, kind: str, until: float) -> float:
        return max(0.0, min(STEP_LIMITS[kind] * self.scale, until - time.monotonic()))

    def run(self, name: str, command: list[str], timeout: float) -> tuple[int | str, str, float]:
        """(exit code or 'timeout' or 'not run', stdout, seconds) of one step's process; its stderr goes to log.txt."""
        if timeout < 5:
            return "not run", "", 0.0
        started = time.monotonic()
        process = subprocess.Popen([sys.executable, *command], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            out, err = process.communicate(timeout=timeout)
            code: int | str = process.returncode
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            out, err = process.communicate()
            code = "timeout"
        seconds = time.monotonic() - started
        with self.lock:
            self.log.write(f"==== {name} (exit {code}, {seconds:.1f} s): {' '.join(command)}\n{err}\n")
            self.log.flush()
        self.local.error = _last_line(err)
        return code, out, seconds

    def aitk(self, name: str, record: Path, args: list, kind: str, until: float) -> tuple[int | str, Any, float]:
        """``aitk ARGS --json`` under gpu_spy (every session recorded in ``record``): (exit code, parsed JSON or None, seconds)."""
        code, out, seconds = self.run(name, [str(HERE / "gpu_spy.py"), str(record), *map(str, args), "--json"], self.limit(kind, until))
        try:
            return code, json.loads(out), seconds
        except ValueError:
            return code, None, seconds

    def failure(self, code: int | str) -> str:
        if code == "not run":
            return "not run: time budget spent"
        return f"FAILED: {'timed out' if code == 'timeout' else f'exit {code}'}: {getattr(self.local, 'error', '')}"


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="Exit codes: 0 passed; 1 a check failed or did not run; 2 usage; 4 no CUDA here.")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="cuda: the check; cpu: the same pipeline on the CPU provider (a self-test)")
    parser.add_argument("--out", type=Path, default=Path("bench-out/gpu-check"), help="folder for gpu-check.md, gpu-check.json and log.txt")
    parser.add_argument("--work", type=Path, default=None, help="folder for sample data and bundles (default: OUT/work)")
    parser.add_argument("--budget", type=float, default=DEFAULT_BUDGET, help="seconds for all the steps together")
    parser.add_argument("--only", default="", help="comma-separated use cases (default: every installed one)")
    parser.add_argument("--quick", action=argparse.BooleanOptionalAction, default=True, help="fewer training steps than the sample's settings (default: on)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per engine in the speed part")
    args = parser.parse_args()
    if args.device == "cuda" and (reason := cuda_missing()):
        print(f"gpu_check: CUDA cannot be used: {reason}", file=sys.stderr)
        sys.exit(NO_CUDA)
    args.out.mkdir(parents=True, exist_ok=True)
    args.work = (args.work or args.out / "work").resolve()
    started = time.monotonic()
    declared = register_plugins(args.work)
    info = machine(args.device) | {"check": f"--device {args.device}, budget {args.budget:.0f} s, quick {args.quick}",
                                   "plugins declared from pyproject.toml": declared, "dependencies missing": missing_packages()}
    for key, value in info.items():
        print(f"{key}: {value}", file=sys.stderr, flush=True)
    import gpu_usecases

    check = Check(args)
    try:
        probe_started = time.monotonic()
        provider = provider_probe(args.device)
        expected = CUDA if args.device == "cuda" else CPU
        check.row("-", "ORT provider starts", args.device, "fp32", "ok" if provider == expected else f"FAILED: got {provider}", time.monotonic() - probe_started, provider)
    except Exception as e:
        check.row("-", "ORT provider starts", args.device, "fp32", f"FAILED: {type(e).__name__}: {e}", time.monotonic() - probe_started, "")
    if check.rows[-1]["status"] == "ok":
        try:
            gpu_usecases.check_all(check, args)
        except Exception as e:  # e.g. the plugins cannot be listed: still write what there is
            check.row("-", "use cases", args.device, "-", f"FAILED: {type(e).__name__}: {e}", 0.0, "")
    write_report(args.out, info, check.rows, time.monotonic() - started)
    sys.exit(0 if all(r["status"] == "ok" for r in check.rows) else 1)


def write_report(out: Path, info: dict[str, Any], rows: list[dict], seconds: float) -> None:
    """gpu-check.md (the machine, then one table) and gpu-check.json, each written whole (temp file + rename)."""
    passed = all(r["status"] == "ok" for r in rows)
    columns = ["usecase", "step", "device", "precision", "status", "seconds", "result"]
    lines = [f"- {k}: {v}" for k, v in info.items()]
    lines += [f"- total: {seconds:.0f} s, {'all checks passed' if passed else 'SOME CHECKS FAILED'}", "",
              "| use case | step | device | precision / engine | status | s | result |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(r[c]).replace("|", "/") for c in columns) + " |" for r in rows]
    table = "\n".join(lines) + "\n"
    for name, text in (("gpu-check.md", table), ("gpu-check.json", json.dumps({"machine": info, "passed": passed, "seconds": round(seconds, 1), "rows": rows}, indent=1, default=str))):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, out / name)
    print(table)


if __name__ == "__main__":
    main()
