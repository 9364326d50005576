"""`aitk doctor`: what this machine offers aitk: versions, providers that really start, GPU, threads."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from typing import Any

from applied_aitk import __version__


def report() -> dict[str, Any]:
    import onnxruntime as ort

    from applied_aitk.runtime import CUDA, Runtime, available_providers, cuda_unavailable_reason

    info: dict[str, Any] = {
        "aitk": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "onnxruntime": ort.__version__,
        "providers_available": available_providers(),
    }
    reason = cuda_unavailable_reason()
    if reason is None:
        try:
            got = Runtime(device="cuda").session(_tiny_model()).provider
            info["cuda_provider"] = "usable" if got == CUDA else f"not usable (session got {got})"
        except Exception as e:
            info["cuda_provider"] = f"not usable ({e})"
    else:
        info["cuda_provider"] = f"not usable ({reason})"
    info["gpu"] = _gpus() or "none found"
    info.update(_torch_info())
    info["cpu_cores"] = os.cpu_count()
    info["threads"] = {"ort_intra_op_default": "all cores", "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "unset")}
    return info


def _tiny_model() -> bytes:
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "doctor", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def _gpus() -> list[str]:
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def _torch_info() -> dict[str, Any]:
    try:
        import torch
    except ImportError:
        return {"torch": "not installed"}
    return {
        "torch": torch.__version__,
        "torch_cuda": torch.cuda.is_available() and torch.cuda.get_device_name(0) or "not available",
        "torch_threads": torch.get_num_threads(),
    }
