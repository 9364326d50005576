"""torch -> ONNX with dynamic batch axes, a parity check against torch, and int8 quantization.

``export`` writes the ONNX file, runs it in ONNX Runtime (CPU) beside the torch module on the
same inputs and raises ParityError when they disagree, so a caller writing a bundle inside a
BundleWriter block never commits a bad export. The returned dict goes into the manifest."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from toolkit.errors import AitkError, ParityError


def export(
    module,
    example_inputs: tuple,
    path: Path,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: dict[str, dict[int, str]] | None = None,
    parity_inputs: tuple | None = None,
    atol: float = 1e-4,
    label_output: str | None = None,
    opset: int = 17,
) -> dict[str, Any]:
    """Export ``module`` and check it; returns the model's schema and parity for the manifest.

    ``dynamic_axes`` defaults to axis 0 ("batch") of every input and output. ``parity_inputs``
    (default ``example_inputs``) should hold a batch size other than the export's to prove the
    dynamic axis. ``label_output`` names a score output whose argmax must agree (classifiers)."""
    import torch

    module = module.eval()
    if dynamic_axes is None:
        dynamic_axes = {name: {0: "batch"} for name in [*input_names, *output_names]}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter: still the one the int8 LSTM path needs
        warnings.filterwarnings("ignore", message=".*batch_size other than 1")  # parity runs another batch size below
        torch.onnx.export(
            module,
            example_inputs,
            str(path),
            input_names=list(input_names),
            output_names=list(output_names),
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            dynamo=False,
        )
    parity = check_parity(module, path, parity_inputs or example_inputs, output_names, atol, label_output)
    return {"file": Path(path).name, "schema": onnx_schema(path), "parity": parity}


def check_parity(
    module,
    onnx_path: Path,
    inputs: tuple,
    output_names: Sequence[str],
    atol: float,
    label_output: str | None = None,
) -> dict[str, Any]:
    """Compare torch and ONNX Runtime outputs; raises ParityError beyond ``atol`` or on label disagreement."""
    import numpy as np
    import torch

    from toolkit.runtime import Runtime

    with torch.no_grad():
        expected = module(*inputs)
    if isinstance(expected, torch.Tensor):
        expected = (expected,)
    expected = [t.detach().cpu().numpy() for t in expected]
    session = Runtime(device="cpu").session(Path(onnx_path))
    got = session(*[t.detach().cpu().numpy() for t in inputs])
    result: dict[str, Any] = {"atol": atol, "max_abs_diff": {}, "batch": int(inputs[0].shape[0])}
    for name, want, have in zip(output_names, expected, got):
        diff = float(np.max(np.abs(want.astype(np.float64) - have.astype(np.float64)))) if want.size else 0.0
        result["max_abs_diff"][name] = diff
        if not diff <= atol:
            raise ParityError(f"ONNX export differs from torch on output {name!r}: max abs diff {diff:.3g} > {atol:g}")
        if name == label_output:
            agreement = float(np.mean(want.argmax(-1) == have.argmax(-1)))
            result["label_agreement"] = agreement
            if agreement < 1.0:
                raise ParityError(f"ONNX export disagrees with torch on {1 - agreement:.1%} of labels")
    return result


def onnx_schema(path: Path) -> dict[str, list[dict[str, Any]]]:
    """Input and output names, element types and shapes (symbolic axes by name) of an ONNX file."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph

    def describe(values):
        described = []
        for value in values:
            tensor = value.type.tensor_type
            shape = [d.dim_param or d.dim_value for d in tensor.shape.dim]
            described.append({"name": value.name, "dtype": onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name, "shape": shape})
        return described

    return {"inputs": describe(graph.input), "outputs": describe(graph.output)}


def quantize_dynamic(src: Path, dst: Path) -> None:
    """int8 weights, activations quantized on the fly: for MatMul-, Gemm- and LSTM-heavy models.

    Never for convolutional models: ConvInteger ran 5-16x slower than fp32 (see PERF.md)."""
    import onnx
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization import quantize_dynamic as ort_quantize_dynamic

    model = onnx.load(str(src))
    del model.graph.value_info[:]  # stale shapes make the quantizer's shape inference fail
    cleaned = Path(dst).with_suffix(".prep.onnx")
    onnx.save(model, str(cleaned))
    try:
        ort_quantize_dynamic(str(cleaned), str(dst), weight_type=QuantType.QInt8)
    finally:
        cleaned.unlink(missing_ok=True)


def quantize_static(src: Path, dst: Path, calibration: Iterable[dict[str, Any]], fmt: str = "qdq") -> None:
    """int8 weights and activations calibrated on ``calibration`` feeds: for convolutional models.

    ``fmt`` is "qdq" (QuantizeLinear/DequantizeLinear pairs) or "qoperator" (QLinearConv...)."""
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType
    from onnxruntime.quantization import quantize_static as ort_quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    formats = {"qdq": QuantFormat.QDQ, "qoperator": QuantFormat.QOperator}
    if fmt not in formats:
        raise AitkError(f"quantization format {fmt!r}: expected qdq or qoperator")

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter(calibration)

        def get_next(self):
            return next(self.feeds, None)

    prepared = Path(dst).with_suffix(".prep.onnx")
    try:
        quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
        ort_quantize_static(
            str(prepared),
            str(dst),
            Reader(),
            quant_format=formats[fmt],
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            calibrate_method=CalibrationMethod.MinMax,
        )
    finally:
        prepared.unlink(missing_ok=True)
