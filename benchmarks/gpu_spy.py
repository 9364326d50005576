"""Watches every ONNX Runtime session a run of the aitk CLI makes, for `benchmarks/gpu_check.py`.

    python benchmarks/gpu_spy.py RECORD <aitk arguments...>

runs ``aitk <aitk arguments>`` (``applied_aitk.cli.main``, as ``python -c "from applied_aitk.cli import main;
main()"`` does) and, at exit, writes ``RECORD.json``: every ``applied_aitk.runtime.OrtSession`` created
(model file, the device asked for, the provider it really got) and, when torch was used, the peak
CUDA memory it allocated; and ``RECORD.npz``: the inputs and outputs of the first ``KEEP_CALLS``
calls of each session. ``compare`` then checks one run's outputs against another's (CUDA against
CPU) on the calls whose inputs were identical."""

from __future__ import annotations

import atexit
import json
import sys
from pathlib import Path
from typing import Any

KEEP_CALLS = 3


def install(record: Path) -> None:
    """Wrap ``OrtSession`` so that every session and its first calls are written to ``record``.json/.npz at exit."""
    import numpy as np

    from applied_aitk import runtime

    sessions: list[dict[str, Any]] = []
    arrays: dict[str, np.ndarray] = {}
    cls = runtime.OrtSession
    original_init = cls.__init__

    def init(self, model, rt) -> None:
        try:
            original_init(self, model, rt)
        finally:  # a session that raised (--device cuda without the provider) is recorded too
            self._spy_index, self._spy_calls = len(sessions), 0
            name = "<in memory>" if isinstance(model, bytes) else Path(model).name
            sessions.append({"model": name, "device": rt.device, "provider": getattr(self, "provider", None), "calls": 0})

    def keep(self, feeds: dict[str, Any], outputs: list[Any]) -> None:
        sessions[self._spy_index]["calls"] += 1
        if self._spy_calls < KEEP_CALLS:
            prefix = f"s{self._spy_index}.c{self._spy_calls}"
            for name, value in feeds.items():
                arrays[f"{prefix}.in.{name}"] = _host(value)
            for i, value in enumerate(outputs):
                arrays[f"{prefix}.out.{i}"] = _host(value)
            self._spy_calls += 1

    def watched(method):
        def call(self, feeds, **kwargs):  # kwargs: run_on_device's `into` (outputs written in place)
            outputs = method(self, feeds, **kwargs)
            keep(self, feeds, outputs)
            return outputs

        return call

    cls.__init__ = init
    for name in ("run", "run_on_device"):  # run_on_device: IO binding, outputs left on the device
        if hasattr(cls, name):
            setattr(cls, name, watched(getattr(cls, name)))

    def write() -> None:
        record.parent.mkdir(parents=True, exist_ok=True)
        np.savez(_file(record, ".npz"), **arrays)
        _file(record, ".json").write_text(json.dumps({"sessions": sessions, "torch": _torch_use()}, indent=1))

    atexit.register(write)


def _file(record: Path, suffix: str) -> Path:
    return record.with_name(record.name + suffix)


def _host(value: Any):
    import numpy as np

    return np.array(value if isinstance(value, np.ndarray) else value.numpy())  # an OrtValue: copied to the host


def _torch_use() -> dict[str, Any] | None:
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    return {"device": torch.cuda.get_device_name(0), "peak_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1)}


def read(record: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the sessions file, the arrays) of a recorded run; empty when the run wrote none."""
    import numpy as np

    if not _file(record, ".json").is_file():
        return {"sessions": [], "torch": None}, {}
    with np.load(_file(record, ".npz")) as data:
        arrays = {k: data[k] for k in data.files}
    return json.loads(_file(record, ".json").read_text()), arrays


def compare(reference: Path, candidate: Path, tolerance) -> dict[str, Any]:
    """Outputs of ``candidate``'s sessions against ``reference``'s, session by session (matched by model
    file, in order of creation), on every kept call whose inputs were identical in both runs.

    ``tolerance(model_file) -> (atol, rtol)``; an output passes when its largest absolute difference
    is at most ``atol + rtol * (largest magnitude of the reference output)``. NaN never passes.
    Returns calls compared and skipped (inputs differ, as when generated tokens diverge), the
    largest difference, where it was, and ``within``: every compared output passed, at least one call compared."""
    import numpy as np

    (ref_info, ref), (cand_info, cand) = read(reference), read(candidate)
    result = {"compared": 0, "skipped": 0, "max_abs_diff": 0.0, "worst": None, "within": True}
    for ref_index, cand_index in _pairs(ref_info["sessions"], cand_info["sessions"]):
        model = ref_info["sessions"][ref_index]["model"]
        atol, rtol = tolerance(model)
        for call in range(KEEP_CALLS):
            a, b = _call(ref, ref_index, call), _call(cand, cand_index, call)
            if a is None or b is None:
                break
            if a[0].keys() != b[0].keys() or not all(np.array_equal(a[0][k], b[0][k]) for k in a[0]):
                result["skipped"] += 1
                continue
            result["compared"] += 1
            for i, (want, have) in enumerate(zip(a[1], b[1])):
                if want.shape != have.shape:
                    diff, limit = float("inf"), 0.0
                else:
                    diff = float(np.max(np.abs(want.astype(np.float64) - have.astype(np.float64)))) if want.size else 0.0
                    limit = atol + rtol * (float(np.max(np.abs(want))) if want.size else 0.0)
                if not diff <= limit:
                    result["within"] = False
                if not diff <= result["max_abs_diff"]:
                    result["max_abs_diff"], result["worst"] = diff, f"{model} output {i} (limit {limit:.3g})"
    result["within"] = result["within"] and result["compared"] > 0
    return result


def _pairs(reference: list[dict], candidate: list[dict]) -> list[tuple[int, int]]:
    """Indices of the sessions of both runs that ran the same model file, the n-th with the n-th."""
    pairs = []
    for model in dict.fromkeys(s["model"] for s in reference):
        ref = [i for i, s in enumerate(reference) if s["model"] == model]
        cand = [i for i, s in enumerate(candidate) if s["model"] == model]
        pairs += list(zip(ref, cand))
    return pairs


def _call(arrays: dict[str, Any], session: int, call: int):
    prefix = f"s{session}.c{call}."
    feeds = {k[len(prefix) + 3:]: v for k, v in arrays.items() if k.startswith(prefix + "in.")}
    outputs = [arrays[k] for k in sorted((k for k in arrays if k.startswith(prefix + "out.")), key=lambda k: int(k.rsplit(".", 1)[1]))]
    return (feeds, outputs) if feeds else None


def main() -> None:
    record, args = Path(sys.argv[1]), sys.argv[2:]
    install(record)
    from applied_aitk.cli import main as aitk

    sys.argv = ["aitk", *args]
    aitk()


if __name__ == "__main__":
    main()
