"""torch -> ONNX with dynamic batch axes, a parity check against torch, int8 quantization and fp16.

``export`` writes the ONNX file, runs it in ONNX Runtime (CPU) beside the torch module on the
same inputs and raises ParityError when they disagree, so ``applied_aitk.package`` never commits a
bad export. The returned dict goes into the manifest."""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from applied_aitk.errors import AitkError, ParityError


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
    custom_opsets: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Export ``module`` and check it; returns the model's schema and parity for the manifest.

    ``dynamic_axes`` defaults to axis 0 ("batch") of every input and output. ``parity_inputs``
    (default ``example_inputs``) should hold a batch size other than the export's to prove the
    dynamic axis. ``label_output`` names a score output whose argmax must agree (classifiers).
    ``custom_opsets``: domains of non-standard ops the module's symbolic functions write, with their
    versions (``{"com.microsoft": 1}``: ONNX Runtime's contrib ops)."""
    import torch

    module = module.eval()
    if dynamic_axes is None:
        dynamic_axes = {name: {0: "batch"} for name in [*input_names, *output_names]}
    with torch.no_grad(), warnings.catch_warnings(), tempfile.TemporaryDirectory(dir=Path(path).parent) as tmp:
        warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter: still the one the int8 LSTM path needs
        warnings.filterwarnings("ignore", message=".*batch_size other than 1")  # parity runs another batch size below
        exported = Path(tmp) / Path(path).name
        torch.onnx.export(
            module,
            example_inputs,
            str(exported),
            input_names=list(input_names),
            output_names=list(output_names),
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            custom_opsets=custom_opsets or {},
            dynamo=False,
        )
        save_onnx(exported, Path(path))
    parity = check_parity(module, path, parity_inputs or example_inputs, output_names, atol, label_output)
    return {"file": Path(path).name, "schema": onnx_schema(path), "parity": parity}


PROTOBUF_LIMIT = 2**31 - 2**20  # an ONNX file holds at most 2 GiB; a margin for the graph itself


def save_onnx(src: Path, dst: Path) -> None:
    """Move the ONNX file ``src`` to ``dst``. A model over 2 GiB (a 0.5B-parameter language model in fp32)
    cannot be one protobuf file: torch then writes one file per weight beside it, named after the
    weights, so two graphs in one folder would overwrite each other's; here its weights go to one
    file, ``dst`` + ``.data`` (ONNX external data, which ONNX Runtime reads from beside the graph)."""
    import onnx

    if not _has_external_data(onnx.load(str(src), load_external_data=False)):
        os.replace(src, dst)
        return
    model = onnx.load(str(src))
    Path(str(dst) + ".data").unlink(missing_ok=True)
    onnx.save_model(model, str(dst), save_as_external_data=True, all_tensors_to_one_file=True, location=Path(dst).name + ".data", size_threshold=1024)


def _has_external_data(model) -> bool:
    import onnx

    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)


def save_large(model, dst: Path) -> None:
    """Save an in-memory ONNX model: one file, or beside it ``dst`` + ``.data`` when over 2 GiB."""
    import onnx

    if sum(len(t.raw_data) for t in model.graph.initializer) < PROTOBUF_LIMIT:  # ByteSize() itself fails past 2 GiB
        onnx.save(model, str(dst))
    else:
        onnx.save_model(model, str(dst), save_as_external_data=True, all_tensors_to_one_file=True, location=Path(dst).name + ".data", size_threshold=1024)


def check_parity(
    module,
    onnx_path: Path,
    inputs: tuple,
    output_names: Sequence[str],
    atol: float,
    label_output: str | None = None,
    rtol: float = 0.0,
) -> dict[str, Any]:
    """Compare torch and ONNX Runtime outputs; raises ParityError on label disagreement or beyond
    ``atol + rtol * (largest magnitude of the output)``."""
    import numpy as np
    import torch

    from applied_aitk.runtime import Runtime

    with torch.no_grad():
        expected = module(*inputs)
    if isinstance(expected, torch.Tensor):
        expected = (expected,)
    expected = [t.detach().cpu().numpy() for t in expected]
    session = Runtime(device="cpu").session(Path(onnx_path))
    got = session(*[t.detach().cpu().numpy() for t in inputs])
    result: dict[str, Any] = {"atol": atol, "max_abs_diff": {}, "batch": int(inputs[0].shape[0])}
    if rtol:
        result["rtol"] = rtol
    for name, want, have in zip(output_names, expected, got):
        diff = float(np.max(np.abs(want.astype(np.float64) - have.astype(np.float64)))) if want.size else 0.0
        result["max_abs_diff"][name] = diff
        limit = atol + rtol * (float(np.max(np.abs(want))) if want.size else 0.0)
        if not diff <= limit:
            raise ParityError(f"ONNX export {Path(onnx_path).name} differs from torch on output {name!r}: max abs diff {diff:.3g} > {limit:.3g}")
        if name == label_output:
            agreement = float(np.mean(want.argmax(-1) == have.argmax(-1)))
            result["label_agreement"] = agreement
            if agreement < 1.0:
                raise ParityError(f"ONNX export disagrees with torch on {1 - agreement:.1%} of labels")
    return result


def compare(reference: Path, other: Path, inputs: tuple, output_names: Sequence[str], label_output: str | None = None) -> dict[str, Any]:
    """How far ``other`` (an int8 graph, say) is from ``reference`` in ONNX Runtime (CPU) on ``inputs``:
    the largest absolute difference of each output, and the share of equal labels for ``label_output``."""
    import numpy as np

    from applied_aitk.runtime import Runtime

    cpu = Runtime(device="cpu")
    feeds = [t.detach().cpu().numpy() for t in inputs]
    want, have = cpu.session(Path(reference))(*feeds), cpu.session(Path(other))(*feeds)
    result: dict[str, Any] = {"max_abs_diff": {}, "batch": int(feeds[0].shape[0])}
    for name, a, b in zip(output_names, want, have):
        result["max_abs_diff"][name] = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0
        if name == label_output:
            result["label_agreement"] = float(np.mean(a.argmax(-1) == b.argmax(-1)))
    return result


FP16_ATOL, FP16_RTOL = 1e-2, 2e-2  # float16 keeps ~3 significant digits; errors grow with an output's scale
FP16_KEEP_FP32 = ["LSTM", "GRU", "RNN"]  # no float16 kernels in the CPU provider, where the check runs


def convert_fp16(src: Path, dst: Path) -> None:
    """float16 weights and activations, for the CUDA provider; inputs and outputs keep their types."""
    import onnx
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # it warns about every constant it clamps into the float16 range
        model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True, op_block_list=DEFAULT_OP_BLOCK_LIST + FP16_KEEP_FP32)
    # it inserts the same Cast twice when one value feeds a kept-fp32 op twice (an LSTM's initial h and c)
    unique = list({node.SerializeToString(): node for node in model.graph.node}.values())
    del model.graph.node[:]
    model.graph.node.extend(unique)
    onnx.save(model, str(dst))


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

    Weights use 7 bits (``reduce_range``): on x86 CPUs without VNNI, ONNX Runtime multiplies uint8
    activations by int8 weights with VPMADDUBSW, whose int16 pair sums saturate with full-range
    weights (255 * 127 * 2 > 32767) and silently corrupt outputs; 7-bit weights cannot overflow
    (see "When to try U8U8" in ONNX Runtime's quantization guide). Never for convolutional models:
    ConvInteger ran 5-16x slower than fp32 in the defects benchmark."""
    import onnx
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization import quantize_dynamic as ort_quantize_dynamic

    model = onnx.load(str(src))
    del model.graph.value_info[:]  # stale shapes make the quantizer's shape inference fail
    cleaned = Path(dst).with_suffix(".prep.onnx")
    save_large(model, cleaned)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer's advice to pre-process is for static quantization
    try:
        # ONNX's shape inference cannot type the outputs of ONNX Runtime's contrib ops (GroupQueryAttention):
        # a MatMul fed by one is then taken as float
        ort_quantize_dynamic(str(cleaned), str(dst), weight_type=QuantType.QInt8, reduce_range=True,
                             extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    finally:
        root.setLevel(level)
        cleaned.unlink(missing_ok=True)
        Path(str(cleaned) + ".data").unlink(missing_ok=True)


def quantize_int4(src: Path, dst: Path, block_size: int = 128, accuracy_level: int = 4) -> None:
    """4-bit weights of every MatMul with a constant weight (ONNX Runtime's MatMulNBits): block-wise,
    each ``block_size`` weights along the input dimension with their own scale and zero point
    (asymmetric). ``accuracy_level`` 4: the CPU kernel multiplies the 4-bit weights with activations
    quantized to int8 per block on the fly (as llama.cpp's Q4_0 x Q8_0 dot products), its fastest
    CPU path; 0 multiplies in float. The stored activations and outputs stay float.
    For transformer-style graphs on the CPU.

    Block size 128, not 32: a float32 scale per 32 weights is one more bit per weight to read, and on
    a 4-layer model of Qwen2.5-Coder-0.5B's widths (2-core AVX2 EPYC, ORT 1.31, alternating runs)
    128 took the prompt pass from ~1030 to ~740 ms and a decoding step from ~44 to ~25-39 ms at
    batch 1; symmetric blocks (no zero point) were no faster, so the zero point stays for accuracy."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer logs every node it visits
    try:
        quantizer = MatMulNBitsQuantizer(onnx.load(str(src)), bits=4, block_size=block_size, is_symmetric=False, accuracy_level=accuracy_level)
        quantizer.process()
        quantizer.model.save_model_to_file(str(dst), use_external_data_format=False)
    finally:
        root.setLevel(level)


def quantize_static(src: Path, dst: Path, calibration: Iterable[dict[str, Any]], fmt: str = "qdq") -> None:
    """int8 weights and activations calibrated on ``calibration`` feeds: for convolutional models.

    ``fmt`` is "qdq" (QuantizeLinear/DequantizeLinear pairs) or "qoperator" (QLinearConv...).
    Weights use 7 bits, per channel, as in ``quantize_dynamic``: on x86 CPUs without VNNI the uint8 x
    int8 kernels' int16 pair sums saturate with full-range weights (PatchCore's image AUROC fell
    0.07 and a fine-tuned network's scores moved by up to 0.6 on such a CPU); 7-bit weights cannot."""
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
            reduce_range=True,
            calibrate_method=CalibrationMethod.MinMax,
        )
    finally:
        prepared.unlink(missing_ok=True)
