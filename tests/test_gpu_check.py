"""benchmarks/gpu_check.py without a GPU: the one-line exit, plugin discovery in a bare working tree,
and the comparison of recorded ONNX Runtime outputs it asserts on a GPU."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "benchmarks"
HAS_NVIDIA = Path("/proc/driver/nvidia/version").exists() or Path("/dev/nvidia0").exists()


def python(code: str, *args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(BENCH), str(REPO)])}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=60)


@pytest.mark.skipif(HAS_NVIDIA, reason="this machine has an NVIDIA driver")
def test_without_cuda_it_exits_4_at_once_with_one_line(tmp_path):
    started = time.perf_counter()
    result = subprocess.run([sys.executable, str(BENCH / "gpu_check.py"), "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=60)
    assert time.perf_counter() - started < 5
    assert result.returncode == 4
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "gpu_check: CUDA cannot be used: no NVIDIA GPU or driver here (neither /proc/driver/nvidia/version nor /dev/nvidia0 exists)"]
    assert not (tmp_path / "out").exists()


def test_builtin_plugins_are_found_without_an_installed_entry_point(tmp_path):
    code = ("import sys; from pathlib import Path; import gpu_check; gpu_check.register_plugins(Path(sys.argv[1]))\n"
            "from importlib.metadata import entry_points\n"
            "print(sorted(ep.name for ep in entry_points(group='aitk') if ep.dist.name == 'aitk-worktree'))\n"
            "import applied_aitk.usecases.fraud.plugin as fraud; print(fraud.__file__)")
    result = python(code, str(tmp_path))
    assert result.returncode == 0, result.stderr
    module = tmp_path / "entry-points/applied_aitk/usecases/fraud/plugin.py"  # the working tree's, through links
    assert result.stdout.splitlines() == ["['chatbot', 'codegen', 'defects', 'forecast', 'fraud']", str(module)]
    assert module.resolve() == REPO / "plugins/fraud/plugin.py"


RECORD = """
import sys
from pathlib import Path
import numpy as np
import gpu_spy
from onnx import TensorProto, helper, save
from applied_aitk.runtime import Runtime
out = Path(sys.argv[1])
gpu_spy.install(out / "record")
x, y = (helper.make_tensor_value_info(n, TensorProto.FLOAT, [None]) for n in "xy")
model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]), opset_imports=[helper.make_opsetid("", 17)])
model.ir_version = 8
save(model, str(out / "model.onnx"))
session = Runtime(device="cpu").session(out / "model.onnx")
for shift in range(4):
    session.run({"x": np.arange(4, dtype=np.float32) - shift})
"""


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> tuple[Path, Path]:
    """Two recordings of the same run (as the CPU and the CUDA runs of the check are)."""
    paths = []
    for name in ("reference", "candidate"):
        folder = tmp_path_factory.mktemp(name)
        result = python(RECORD, str(folder))
        assert result.returncode == 0, result.stderr
        paths.append(folder / "record")
    return paths[0], paths[1]


def _edit(record: Path, key: str, change) -> None:
    with np.load(f"{record}.npz") as data:
        arrays = {k: data[k] for k in data.files}
    arrays[key] = change(arrays[key])
    np.savez(f"{record}.npz", **arrays)


def test_the_spy_records_sessions_and_the_first_calls(records):
    sys.path.insert(0, str(BENCH))
    import gpu_spy

    info, arrays = gpu_spy.read(records[0])
    assert info["sessions"] == [{"model": "model.onnx", "device": "cpu", "provider": "CPUExecutionProvider", "calls": 4}]
    assert sorted(arrays) == sorted(f"s0.c{c}.{kind}" for c in range(gpu_spy.KEEP_CALLS) for kind in ("in.x", "out.0"))
    result = gpu_spy.compare(records[0], records[1], lambda model: (1e-4, 0.0))
    assert result | {"worst": None} == {"compared": 3, "skipped": 0, "max_abs_diff": 0.0, "worst": None, "within": True}


def test_outputs_beyond_the_tolerance_fail_and_differing_inputs_are_skipped(records, tmp_path):
    sys.path.insert(0, str(BENCH))
    import gpu_spy

    reference, candidate = records
    for suffix in (".json", ".npz"):
        (tmp_path / f"record{suffix}").write_bytes(Path(f"{candidate}{suffix}").read_bytes())
    candidate = tmp_path / "record"
    _edit(candidate, "s0.c0.out.0", lambda a: a + 0.01)
    assert not gpu_spy.compare(reference, candidate, lambda model: (1e-3, 0.0))["within"]
    assert gpu_spy.compare(reference, candidate, lambda model: (1e-3, 0.01))["within"]  # 0.01 x scale 3 allows 0.03
    _edit(candidate, "s0.c1.out.0", lambda a: a * np.nan)
    assert not gpu_spy.compare(reference, candidate, lambda model: (1.0, 1.0))["within"]
    for call in range(3):
        _edit(candidate, f"s0.c{call}.in.x", lambda a: a + 1)
    result = gpu_spy.compare(reference, candidate, lambda model: (1.0, 1.0))
    assert (result["compared"], result["skipped"], result["within"]) == (0, 3, False)
