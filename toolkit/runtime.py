"""ONNX Runtime sessions: device choice, providers, threads, and the provider a session really got.

ONNX Runtime falls back to CPU silently when the CUDA provider cannot load; here ``cuda`` then
fails with DeviceError (exit 4) and ``auto`` says so in one warning line."""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from applied_aitk.console import warn_once
from applied_aitk.errors import AitkError, DeviceError
from applied_aitk.manifest import VARIANTS, variant_file

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class Runtime:
    """How to run models: ``device`` (auto, cpu, cuda), ORT intra-op ``threads`` (None: all cores), and
    the bundle ``variant`` to run (None: fp32; "int8": the CPU path; "fp16": the CUDA path; "int4": weight-only, either).

    What a bundle holds (which variants to write) is a training setting, not the runtime's."""

    device: str = "auto"
    threads: int | None = None
    variant: str | None = None
    spinning: bool = True
    """ORT's idle intra-op threads spin for the next call (lowest latency when the cores are free);
    False lets them sleep, leaving the cores to other work in the process (a server's event loop)."""

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise AitkError(f"--device {self.device!r}: expected one of {', '.join(DEVICES)}")
        if self.variant not in (None, *VARIANTS):
            raise AitkError(f"--quantize {self.variant!r}: expected one of {', '.join(VARIANTS)}")

    def session(self, model: Path | bytes) -> OrtSession:
        return OrtSession(model, self)

    def sleeping(self) -> Runtime:
        """This runtime with ``spinning`` False: how batch predict runs models, whose own threads (a
        reader a block ahead, decoders) need the cores that spinning threads would hold between calls
        (benchmarks/core.py on 2 shared cores: the example plugin 1.2-1.7x faster, in memory and over files)."""
        return dataclasses.replace(self, spinning=False)

    def variant_for(self, bundle, graph: str = "model") -> str | None:
        """The variant of ``graph`` this runtime runs: the one asked for when the bundle has it, else
        None (fp32). int8 is a CPU path: under CUDA the fp32 graph runs."""
        if self.variant is None or (self.variant == "int8" and self.provider() != CPU):
            return None
        if self.variant not in bundle.variants(graph):
            warn_once(f"this bundle has no {variant_file(graph, self.variant)} (train with --quantize {self.variant} "
                      f"to add one); running {bundle.model_file(None, graph).name}")
            return None
        if self.variant == "fp16" and self.provider() == CPU:
            warn_once("float16 is for the CUDA provider; on the CPU it is no faster than fp32")
        return self.variant

    def model_file(self, bundle, graph: str = "model") -> Path:
        """The ONNX file of ``graph`` this runtime runs (see ``variant_for``)."""
        return bundle.model_file(self.variant_for(bundle, graph), graph)

    def provider(self) -> str:
        """The provider sessions will ask for; raises DeviceError when ``cuda`` cannot be had."""
        if self.device == "cpu":
            return CPU
        reason = cuda_unavailable_reason()
        if reason is None:
            return CUDA
        if self.device == "cuda":
            raise DeviceError(f"--device cuda: CUDA cannot be used: {reason}")
        if _nvidia_device_present():
            warn_once(f"{reason}; running on CPU")
        return CPU

    def torch_device(self) -> str:
        """The device torch trains on: CUDA when torch sees one (unless ``cpu`` was asked for)."""
        import torch

        if self.device == "cpu":
            return "cpu"
        if torch.cuda.is_available():
            return "cuda"
        if self.device == "cuda":
            raise DeviceError("--device cuda: torch sees no CUDA device")
        return "cpu"


class OrtSession:
    """One ONNX Runtime InferenceSession; ``provider`` is the one it actually got."""

    def __init__(self, model: Path | bytes, runtime: Runtime):
        ort = import_onnxruntime()
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = runtime.threads or 0
        if not runtime.spinning:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        wanted = runtime.provider()
        providers = [CUDA, CPU] if wanted == CUDA else [CPU]
        source = model if isinstance(model, bytes) else str(model)
        self.session = ort.InferenceSession(source, options, providers=providers)
        self.provider = self.session.get_providers()[0]
        if wanted == CUDA and self.provider != CUDA:
            reason = "ONNX Runtime could not start its CUDA provider (CUDA or cuDNN libraries missing?)"
            if runtime.device == "cuda":
                raise DeviceError(f"--device cuda: {reason}")
            warn_once(f"{reason}; running on CPU")
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.device_type = "cuda" if self.provider == CUDA else "cpu"

    def run(self, feeds: dict[str, Any]) -> list[Any]:
        """Outputs (numpy arrays) in graph order for ``feeds`` (numpy arrays by input name)."""
        return self.session.run(None, feeds)

    def run_on_device(self, feeds: dict[str, Any], into: dict[str, Any] | None = None) -> list[Any]:
        """Outputs as OrtValues left in the session's device memory (IO binding), for loops that
        feed outputs back in: a KV cache then never crosses to the host and back each step.
        ``feeds`` may mix numpy arrays and OrtValues from an earlier call; ``.numpy()`` copies one out.
        ``into`` maps output names to OrtValues (``buffer``) written in place and not returned: an
        output bound to the same buffer as an input (a cache the graph updates in place, as ONNX
        Runtime's GroupQueryAttention does) is then never copied or reallocated."""
        import numpy as np

        into = into or {}
        binding = self.session.io_binding()
        for name, value in feeds.items():
            if isinstance(value, np.ndarray):
                binding.bind_cpu_input(name, np.ascontiguousarray(value))
            else:
                binding.bind_ortvalue_input(name, value)
        for name in self.output_names:
            if name in into:
                binding.bind_ortvalue_output(name, into[name])
            else:
                binding.bind_output(name, self.device_type)
        self.session.run_with_iobinding(binding)
        outputs = binding.get_outputs()
        return [value for name, value in zip(self.output_names, outputs) if name not in into]

    def buffer(self, shape: Sequence[int], dtype: Any = "float32") -> Any:
        """An OrtValue of ``shape`` in the session's device memory (contents undefined), for ``into``."""
        import numpy as np

        ort = import_onnxruntime()
        return ort.OrtValue.ortvalue_from_shape_and_type(list(shape), np.dtype(dtype).type, self.device_type, 0)

    def __call__(self, *arrays: Any) -> list[Any]:
        return self.run(dict(zip(self.input_names, arrays)))


def import_onnxruntime():
    import onnxruntime as ort

    if hasattr(ort, "preload_dlls") and CUDA in ort.get_available_providers() and _nvidia_device_present():
        _preload_cuda_dlls(ort)
    return ort


@functools.cache
def _preload_cuda_dlls(ort) -> None:
    try:
        ort.preload_dlls()
    except Exception:  # a missing library shows up as the provider the session gets
        pass


def cuda_unavailable_reason() -> str | None:
    """None when the CUDA provider can be asked for, else why not (in a few words)."""
    import onnxruntime as ort

    if CUDA not in ort.get_available_providers():
        return f"this onnxruntime ({ort.__version__}) has no CUDA provider; install onnxruntime-gpu"
    if not _nvidia_device_present():
        return "no NVIDIA GPU or driver found"
    return None


def available_providers() -> list[str]:
    return import_onnxruntime().get_available_providers()


def _nvidia_device_present() -> bool:
    return Path("/proc/driver/nvidia/version").exists() or Path("/dev/nvidia0").exists() or os.name == "nt"
