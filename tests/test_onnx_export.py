"""Export and int8 quantization helpers: dynamic batch axes, static quantization for convolutions."""

import numpy as np
import onnx
import pytest
import torch

from toolkit.onnx_export import export, quantize_dynamic, quantize_static
from toolkit.runtime import Runtime


def small_cnn():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 4),
    ).eval()


def cosine(a, b):
    return float((a * b).sum() / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize("fmt", ["qdq", "qoperator"])
def test_static_quantization_of_a_cnn_keeps_its_outputs(tmp_path, fmt):
    model, images = small_cnn(), torch.rand(6, 3, 16, 16)
    info = export(model, (images[:2],), tmp_path / "m.onnx", ["image"], ["logits"], parity_inputs=(images,))
    assert info["schema"]["inputs"][0]["shape"][0] == "batch"
    quantize_static(tmp_path / "m.onnx", tmp_path / "m.int8.onnx", ({"image": images[i : i + 2].numpy()} for i in range(0, 6, 2)), fmt=fmt)
    ops = {node.op_type for node in onnx.load(str(tmp_path / "m.int8.onnx")).graph.node}
    assert ("QuantizeLinear" in ops) if fmt == "qdq" else ("QLinearConv" in ops)
    assert "ConvInteger" not in ops
    (got,) = Runtime(device="cpu").session(tmp_path / "m.int8.onnx")(images.numpy())
    assert cosine(got.ravel(), model(images).detach().numpy().ravel()) > 0.99


def test_dynamic_quantization_of_an_mlp(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Linear(64, 3)).eval()
    x = torch.randn(32, 16)
    export(model, (x[:4],), tmp_path / "m.onnx", ["x"], ["y"], parity_inputs=(x,))
    quantize_dynamic(tmp_path / "m.onnx", tmp_path / "m.int8.onnx")
    ops = {node.op_type for node in onnx.load(str(tmp_path / "m.int8.onnx")).graph.node}
    assert "MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops
    (got,) = Runtime(device="cpu").session(tmp_path / "m.int8.onnx")(x.numpy())
    assert cosine(got.ravel(), model(x).detach().numpy().ravel()) > 0.99
    assert not (tmp_path / "m.int8.prep.onnx").exists()
